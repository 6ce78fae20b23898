"""Labels for routing: `labels` and `queue_labels` in the config, their info series, and the alerts that carry them.

README, "Labels for routing", says why they are info series joined by the rules rather than labels on every
data series; docs/alerts.md, "Routing labels", how the alerts join them.
"""

from __future__ import annotations

import sys

import pytest
import yaml

from aht_exporter.config import RESERVED_LABELS, Config, redacted
from aht_exporter.exposition import SourceView, render
from aht_exporter.health import SourceHealth
from aht_exporter.model import MISSING_LABEL, ConfigError, Field, Sums, make_labels
from aht_exporter.registry import parse_config
from aht_exporter.scheduler import Exporter
from aht_exporter.store import Snapshot
from grafana.aht_mixin import rules
from grafana.aht_mixin.promql import number, parenthesized
from tests.helpers import parse_exposition, samples
from tests.unit.test_exposition_equivalence import assert_same_as_client_python, healthy

GENESYS = """
sources:
  - name: genesys-eu
    provider: genesys
    region: mypurecloud.ie
    client_id: abc
    client_secret: s3cr3t
"""
OZONETEL = """
  - name: oz
    provider: ozonetel
    user_name: u
    api_key: k
    campaigns: [c1]
"""


def load(text: str) -> Config:
    return parse_config(text, "config.yaml", {})


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(text)
    message = str(info.value)
    assert "\n" not in message, "a config error is one line"
    return message


# --- config ----------------------------------------------------------------------------------------


def test_source_labels_and_queue_labels_merged_over_them() -> None:
    text = GENESYS + (
        "    labels: {team: contact-center, site: dublin}\n"
        '    queue_labels: {"q-1": {team: billing}, "12345": {tier: gold}}\n'
    )
    (source,) = load(text).sources
    assert source.routing_labels == (("site", "dublin"), ("team", "contact-center"))
    assert source.queue_routing_labels == {
        "q-1": (("site", "dublin"), ("team", "billing")),
        "12345": (("site", "dublin"), ("team", "contact-center"), ("tier", "gold")),
    }


def test_defaults_labels_apply_to_every_source_that_sets_none_whatever_its_provider() -> None:
    text = "defaults:\n  labels: {site: dublin}\n" + GENESYS + OZONETEL + "    labels: {team: ivr}\n"
    genesys, ozonetel = load(text).sources
    assert genesys.routing_labels == (("site", "dublin"),)
    # A source's own `labels` replace those of `defaults`, as every other key does (SPEC, Config file).
    assert ozonetel.routing_labels == (("team", "ivr"),)
    ozonetel_only = "defaults:\n  labels: {site: mumbai}\nsources:" + OZONETEL
    assert load(ozonetel_only).sources[0].routing_labels == (("site", "mumbai"),)


def test_no_labels_is_the_default_and_check_config_prints_only_labels_that_are_set() -> None:
    config = load(GENESYS)
    assert config.sources[0].routing_labels == ()
    assert config.sources[0].queue_routing_labels == {}
    assert "labels" not in redacted(config)
    printed = yaml.safe_load(redacted(load(GENESYS + "    labels: {team: a}\n    queue_labels: {q1: {site: b}}\n")))
    assert printed["sources"][0]["labels"] == {"team": "a"}
    assert printed["sources"][0]["queue_labels"] == {"q1": {"site": "b"}}


BAD: list[tuple[str, str, str]] = [
    (
        "collides with the exporter's own",
        "    labels: {queue: x}\n",
        "config.yaml: sources[0].labels.queue: queue is a label the exporter or Prometheus sets already: "
        "choose another name",
    ),
    (
        "collides with an alert's own",
        "    labels: {severity: page}\n",
        "config.yaml: sources[0].labels.severity: severity is a label the exporter or Prometheus sets already: "
        "choose another name",
    ),
    (
        "exported_ prefix (what Prometheus renames a colliding label to)",
        "    labels: {exported_team: x}\n",
        "config.yaml: sources[0].labels.exported_team: exported_team is a label the exporter or Prometheus "
        "sets already: choose another name",
    ),
    (
        "reserved prefix",
        "    labels: {__team: x}\n",
        "config.yaml: sources[0].labels.__team: names starting with __ are reserved for Prometheus",
    ),
    (
        "not a label name",
        "    labels: {team-name: x}\n",
        "config.yaml: sources[0].labels.team-name: is not a label name (letters, digits and _, not starting "
        "with a digit, at most 64)",
    ),
    (
        "starts with a digit",
        "    labels: {1team: x}\n",
        "config.yaml: sources[0].labels.1team: is not a label name (letters, digits and _, not starting "
        "with a digit, at most 64)",
    ),
    (
        "a number value",
        "    labels: {site: 42}\n",
        "config.yaml: sources[0].labels.site: 42 is not a string (quote it)",
    ),
    (
        "an empty value",
        "    labels: {team: ''}\n",
        "config.yaml: sources[0].labels.team: must not be empty (Prometheus reads an empty label as no label)",
    ),
    (
        "a value too long",
        f"    labels: {{team: {'x' * 129}}}\n",
        "config.yaml: sources[0].labels.team: is longer than 128 characters",
    ),
    (
        "a control character",
        '    labels: {team: "a\\tb"}\n',
        "config.yaml: sources[0].labels.team: 'a\\tb' holds a control character",
    ),
    (
        "not a mapping",
        "    labels: [team]\n",
        "config.yaml: sources[0].labels: Input should be a valid dictionary",
    ),
    (
        "too many",
        "    labels: {" + ", ".join(f"l{i}: v" for i in range(17)) + "}\n",
        "config.yaml: sources[0].labels: 17 labels are more than 16",
    ),
    (
        "a queue id YAML reads as a number",
        "    queue_labels: {0123: {team: x}}\n",
        "config.yaml: sources[0].queue_labels.83: YAML reads this queue id as a number (83): quote it",
    ),
    (
        "a queue without labels",
        '    queue_labels: {"q1": {}}\n',
        "config.yaml: sources[0].queue_labels.q1: sets no labels",
    ),
    (
        "a queue's labels, checked as a source's",
        '    queue_labels: {"q1": {agent: x}}\n',
        "config.yaml: sources[0].queue_labels.q1.agent: agent is a label the exporter or Prometheus sets "
        "already: choose another name",
    ),
    (
        "a queue's labels not a mapping",
        '    queue_labels: {"q1": team}\n',
        "config.yaml: sources[0].queue_labels.q1: 'team' is not a mapping of label names to values",
    ),
]


@pytest.mark.parametrize(("extra", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_bad_routing_label_is_one_line_naming_its_key(extra: str, expected: str) -> None:
    assert error_of(GENESYS + extra) == expected


def test_a_bad_label_under_defaults_is_reported_there() -> None:
    assert error_of("defaults:\n  labels: {job: x}\n" + GENESYS) == (
        "config.yaml: defaults.labels.job: job is a label the exporter or Prometheus sets already: choose "
        "another name (in sources[0], which inherits it)"
    )


def test_queue_labels_is_not_a_defaults_key() -> None:
    assert error_of("defaults:\n  queue_labels: {q1: {team: x}}\n" + GENESYS) == (
        "config.yaml: defaults.queue_labels: unknown key"
    )


# --- exposition ------------------------------------------------------------------------------------


def test_every_source_has_one_labels_info_series_polled_or_not_labelled_or_not() -> None:
    snap = Snapshot(
        data_end=1772445600,
        fields=frozenset({Field.HANDLE_TIME, Field.CONTACTS_HANDLED}),
        windows={"1h": {make_labels(queue="q1"): Sums(handle_time_seconds=60.0, contacts_handled=1)}},
    )
    stale = healthy("down")
    stale.consecutive_failures = 3
    views = [
        SourceView(
            healthy("g1"), snap, (("site", "dublin"), ("team", "cc")), {"q1": (("site", "dublin"), ("team", "b"))}
        ),
        SourceView(SourceHealth("never", "liveperson", 3), None, (("team", "lp"),)),  # never polled
        SourceView(stale, snap, (("team", "down-team"),)),  # its data withdrawn, its routing kept
        SourceView(healthy("plain"), snap),
    ]
    series = parse_exposition(render(views).text.decode())
    assert samples(series, "aht_source_labels_info") == {
        (("site", "dublin"), ("source", "g1"), ("team", "cc")): 1.0,
        (("source", "never"), ("team", "lp")): 1.0,
        (("source", "down"), ("team", "down-team")): 1.0,
        (("source", "plain"),): 1.0,
    }
    assert samples(series, "aht_queue_labels_info") == {
        (("queue", "q1"), ("site", "dublin"), ("source", "g1"), ("team", "b")): 1.0
    }
    # Not on the data series: a label there would cost bytes on every series and change their identity.
    assert all("team" not in dict(labels) for (name, labels) in series if name == "aht_contacts_handled")
    assert samples(series, "aht_contacts_handled", source="down") == {}


def test_routing_series_are_written_as_client_python_writes_them() -> None:
    nasty = 'back\\slash "quoted"\nnew line'
    assert_same_as_client_python(
        [
            SourceView(healthy("g1"), None, (("team", nasty),), {nasty: (("team", "x"),), "q2": (("site", "s"),)}),
            SourceView(healthy("g2"), None),
        ]
    )


def test_the_exporter_exports_each_source_s_configured_labels() -> None:
    config = load(GENESYS + "    labels: {team: cc}\n    queue_labels: {q1: {team: billing}}\n")
    exporter = Exporter(config)
    series = parse_exposition(exporter.rendered.text.decode())
    assert samples(series, "aht_source_labels_info") == {(("source", "genesys-eu"), ("team", "cc")): 1.0}
    assert samples(series, "aht_queue_labels_info") == {
        (("queue", "q1"), ("source", "genesys-eu"), ("team", "billing")): 1.0
    }


@pytest.mark.skipif(sys.platform != "linux", reason="prometheus_client reads the start time from /proc")
def test_the_exposition_has_the_process_start_time_the_stale_alert_counts_from() -> None:
    series = parse_exposition(render([SourceView(SourceHealth("never", "genesys", 3), None)]).text.decode())
    (start,) = samples(series, "process_start_time_seconds").values()
    assert start > 1.7e9


# --- the rules -------------------------------------------------------------------------------------


def test_the_shipped_routing_labels_are_names_the_config_accepts() -> None:
    for name in rules.ROUTING_LABELS:
        assert name not in RESERVED_LABELS
        assert load(GENESYS + f"    labels: {{{name}: x}}\n").sources[0].routing_labels == ((name, "x"),)


def test_the_alerts_judge_no_queue_for_contacts_outside_any_queue() -> None:
    assert f'queue!="{MISSING_LABEL}"' in rules.ALERT_WINDOW_QUEUE


@pytest.mark.parametrize("alert", rules.ALERTS, ids=lambda a: a.name)
def test_every_alert_about_a_source_carries_the_routing_labels_in_prometheus_and_grafana(alert: rules.Alert) -> None:
    labels = ", ".join(rules.ROUTING_LABELS)
    for expr, prometheus in ((alert.expr, True), (alert.grafana_query, False)):
        if alert.routing == "none":
            assert "labels_info" not in expr
            continue
        assert f"* on (source) group_left ({labels})\n  topk by (source) (1, aht_source_labels_info)" in expr
        on = "source, queue" if alert.routing == "queue" else "source"
        # the left join's fallback: the condition itself, for series no info series matched
        assert expr.endswith(f"\nor on ({on})\n{parenthesized(alert_condition(alert, prometheus))}")
        if alert.routing == "queue":
            assert f"* on (source, queue) group_left ({labels})" in expr and "aht_queue_labels_info" in expr


def alert_condition(alert: rules.Alert, prometheus: bool) -> str:
    """What the alert evaluates before the routing labels are joined: Prometheus' full condition, Grafana's query."""
    if not prometheus:
        query = alert.query
        return f"{parenthesized(query)}\nunless\n{parenthesized(alert.unless)}" if alert.unless else query
    expr = f"{parenthesized(alert.query)} {alert.op} {number(alert.threshold)}"
    return expr + (f"\nunless\n{parenthesized(alert.unless)}" if alert.unless else "")


def test_only_alerts_without_a_source_label_go_unrouted() -> None:
    unrouted = {a.name for a in rules.ALERTS if a.routing == "none"}
    assert unrouted <= {"AhtExporterDown", "AhtExporterTokenBudget"}
    queue_alerts = {a.name for a in rules.ALERTS if a.routing == "queue"}
    assert queue_alerts == {"AhtAboveThreshold", "AhtAbandonRateAboveThreshold", "AhtContactVolumeCollapsed"}


def test_routed_is_a_left_join_that_never_drops_the_condition() -> None:
    condition = "(\n  x > 1\n)"
    routed = rules.routed("x > 1", "source")
    assert routed == (
        f"{condition}\n* on (source) group_left (team, site)\n  topk by (source) (1, aht_source_labels_info)\n"
        f"or on (source)\n{condition}"
    )
    queue = rules.routed("x > 1", "queue")
    assert queue.count(condition) == 3 and queue.endswith(f"or on (source, queue)\n{condition}")
    assert rules.routed("x > 1", "none") == "x > 1"


def test_the_contact_alerts_judge_1h_with_their_quiet_queue_guards() -> None:
    alerts = {a.name: a for a in rules.ALERTS}
    abandon, volume = alerts["AhtAbandonRateAboveThreshold"], alerts["AhtContactVolumeCollapsed"]
    assert abandon.for_ == volume.for_ == "15m"
    assert 'queue_media_type:aht_abandon_rate:ratio{window="1h"' in abandon.query
    assert abandon.unless == "queue_media_type:aht_contacts_offered:sum < 20"
    assert volume.op == "<" and volume.threshold == 0.5
    assert volume.query.count('queue:aht_contact_volume:sum{window="1h", queue!="", queue!="none"} offset 1w') == 2
    assert volume.unless == "queue:aht_contact_volume:sum offset 1w < 20"
    stale = alerts["AhtExporterDataStale"].query
    assert "group_left process_start_time_seconds" in stale and "aht_exporter_source_up" in stale
