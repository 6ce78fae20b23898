"""The fast renderer writes exactly what prometheus_client writes for the same gauges, in both formats.

The reference here is the straightforward client_python way: metric families built from the snapshot
and rendered by `generate_latest`. Any difference, in a byte, is a bug in the fast path.
"""

from __future__ import annotations

import gzip
import math
import random
from collections.abc import Iterator, Sequence
from typing import TypedDict, Unpack

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest as generate_text
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.utils import floatToGoString

from aht_exporter import exposition
from aht_exporter.exposition import (
    FIELD_HELP,
    TOTAL_HELP,
    Renderer,
    ScrapeTail,
    SourceView,
    counting_families,
    go_float,
    health_families,
    render,
    value_texts,
)
from aht_exporter.health import Quota, SourceHealth
from aht_exporter.model import Field, Labels, Names, Sums, make_labels
from aht_exporter.store import Snapshot
from tests.helpers import FixedScrapeFamilies

SERVED = "Served from the last poll; scrapes never call the provider."
NASTY = 'back\\slash "quoted"\nnew line'
# The families read at each scrape, held still so that a body compares byte for byte.
TAIL = ScrapeTail([FixedScrapeFamilies()])
SPECIAL = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1e6, 999_999.999, 1_234_567.5, 1e-7, 5e-324, -2.5e9, 1e22]


class Reference:
    """The series as client_python metric families, as the exposition once built them."""

    def __init__(self, views: Sequence[SourceView]) -> None:
        self.views = views

    def collect(self) -> Iterator[Metric]:
        live = [v for v in self.views if v.snapshot is not None and not v.health.stale]
        aht = Metric(
            "aht_seconds",
            "Average handle time over the window: handle time / contacts handled, in seconds; absent when "
            f"no contact was handled. {SERVED}",
            "gauge",
        )
        per_field = {f: Metric(f"aht_{f.value}", f"{FIELD_HELP[f]} {SERVED}", "gauge") for f in Field}
        queue_info = Metric("aht_queue_info", f"Display name of a queue (skill, campaign); value 1. {SERVED}", "gauge")
        agent_info = Metric("aht_agent_info", f"Display name of an agent; value 1. {SERVED}", "gauge")
        for view in live:
            snap = view.snapshot
            assert snap is not None
            source = view.health.source
            base = {"source": source, "provider": view.health.provider}
            for window, groups in snap.windows.items():
                for labels, totals in groups.items():
                    series = {**base, "window": window, **dict(labels)}
                    for f in snap.fields:
                        per_field[f].add_sample(per_field[f].name, series, totals[f])
                    handled = totals[Field.CONTACTS_HANDLED]
                    if handled > 0:
                        aht.add_sample("aht_seconds", series, totals[Field.HANDLE_TIME] / handled)
            for queue, name in snap.names.queues.items():
                queue_info.add_sample(queue_info.name, {"source": source, "queue": queue, "queue_name": name}, 1)
            for agent, name in snap.names.agents.items():
                agent_info.add_sample(agent_info.name, {"source": source, "agent": agent, "agent_name": name}, 1)
        counters = {f: Metric(f"aht_{f.value}_total", TOTAL_HELP[f], "unknown") for f in Field}
        for view in live:
            snap = view.snapshot
            assert snap is not None
            base = {"source": view.health.source, "provider": view.health.provider}
            for labels, totals in snap.totals.items():
                for f in snap.fields:
                    counters[f].add_sample(counters[f].name, {**base, **dict(labels)}, totals[f])
        yield from (m for m in (aht, *per_field.values(), queue_info, agent_info, *counters.values()) if m.samples)
        yield from routing_info(self.views)
        yield from counting_families(self.views, None)
        yield from health_families([v.health for v in self.views])
        yield from FixedScrapeFamilies().collect()  # last: the scrape-time families end each body


def routing_info(views: Sequence[SourceView]) -> Iterator[Metric]:
    """The routing labels: one series per source, stale or not, and one per labelled queue."""
    source_info = Metric(
        "aht_source_labels_info",
        "Routing labels of a source, from the config (labels); one series per source, also one without labels; "
        "value 1.",
        "gauge",
    )
    queue_info = Metric(
        "aht_queue_labels_info",
        "Routing labels of a queue, from the config (queue_labels over the source's labels); value 1.",
        "gauge",
    )
    for view in views:
        source = view.health.source
        source_info.add_sample(source_info.name, {**dict(view.labels), "source": source}, 1)
        for queue, labels in view.queue_labels.items():
            queue_info.add_sample(queue_info.name, {**dict(labels), "source": source, "queue": queue}, 1)
    yield from (m for m in (source_info, queue_info) if m.samples)


def without_total_types(body: bytes) -> bytes:
    """client_python's body, but for the one difference by design: the `_total` counters carry no TYPE line
    (`untyped` in the text format, `unknown` in OpenMetrics), so that their lines read the same in both
    formats and the OpenMetrics family name cannot clash with the window gauge's (exposition._family_header)."""
    return b"".join(
        line
        for line in body.splitlines(keepends=True)
        if not (line.startswith(b"# TYPE aht_") and line.split()[3] in (b"untyped", b"unknown"))
    )


def assert_same_as_client_python(views: Sequence[SourceView]) -> None:
    rendered = render(views, TAIL)
    reference = Reference(views)
    assert rendered.text == without_total_types(generate_text(reference))
    assert rendered.openmetrics == without_total_types(generate_openmetrics(reference))  # type: ignore[no-untyped-call]
    assert gzip.decompress(rendered.text_gzip) == rendered.text
    assert gzip.decompress(rendered.openmetrics_gzip) == rendered.openmetrics
    # And both parse with client_python's own parsers.
    list(parse_text(rendered.text.decode()))
    list(parse_openmetrics(rendered.openmetrics.decode()))  # type: ignore[no-untyped-call]


def healthy(source: str = "g1", provider: str = "genesys") -> SourceHealth:
    health = SourceHealth(source, provider, 3)
    health.count_request("aggregates", "200")
    health.record_quota("aggregates", Quota(limit=300.0, remaining=12.0, reset_at=1772445061.0))
    health.record_quota("token", Quota(remaining=0.0))  # a "slow down" with no limit said
    health.record_success(1772445000.0, 0.3, 1772445600)
    return health


class SnapshotKeys(TypedDict, total=False):
    """The Snapshot fields a test may set besides its windows."""

    names: Names


def snapshot(windows: dict[str, dict[Labels, Sums]], **kwargs: Unpack[SnapshotKeys]) -> Snapshot:
    fields = frozenset({Field.HANDLE_TIME, Field.CONTACTS_HANDLED, Field.TALK_TIME, Field.CONTACTS_ABANDONED})
    return Snapshot(data_end=1772445600, fields=fields, windows=windows, **kwargs)


def test_every_family_and_label_the_way_client_python_writes_them() -> None:
    voice, chat = make_labels(media_type="voice", queue="q1"), make_labels(media_type="chat", queue="q2")
    snap = snapshot(
        {
            "30m": {voice: Sums(handle_time_seconds=600.5, contacts_handled=4), chat: Sums(contacts_handled=0)},
            "1h": {voice: Sums(handle_time_seconds=900.0, contacts_handled=6, talk_time_seconds=700.25)},
        },
        names=Names(queues={"q1": "Sales", "q2": "Support"}, agents={"a1": "Ana"}),
    )
    averages = Snapshot(
        data_end=1772445600,
        fields=frozenset(),
        # A vendor's own average, as AverageStore holds it: handle time over one contact.
        windows={
            "2h": {make_labels(agent="7", media_type="voice"): Sums(handle_time_seconds=245.0, contacts_handled=1.0)}
        },
    )
    assert_same_as_client_python(
        [SourceView(healthy(), snap), SourceView(healthy("oz", "ozonetel"), averages), SourceView(healthy("x"), None)]
    )


def test_label_values_with_backslash_quote_and_newline_are_escaped() -> None:
    labels = make_labels(queue=NASTY, media_type="voice")
    snap = snapshot(
        {"30m": {labels: Sums(handle_time_seconds=10.0, contacts_handled=1)}},
        names=Names(queues={NASTY: NASTY}),
    )
    assert_same_as_client_python([SourceView(healthy('we"ird\\src\n'), snap)])
    text = render([SourceView(healthy(), snap)]).text.decode()
    assert r'queue="back\\slash \"quoted\"\nnew line"' in text


def test_special_and_large_floats_are_written_as_go_writes_them() -> None:
    groups: dict[Labels, Sums] = {
        make_labels(agent=f"a{i}"): Sums(handle_time_seconds=v, contacts_handled=1.0, talk_time_seconds=v)
        for i, v in enumerate(SPECIAL)
    }
    groups[make_labels(agent="int")] = Sums(handle_time_seconds=7, contacts_handled=2)  # ints from a provider
    assert_same_as_client_python([SourceView(healthy(), snapshot({"1h": groups}))])
    for v in SPECIAL:
        assert go_float(v) == floatToGoString(v)  # type: ignore[no-untyped-call]


def go(values: Sequence[float]) -> list[str]:
    return [floatToGoString(v) for v in values]  # type: ignore[no-untyped-call]


# Where msgspec's writer and Go's text part ways, or nearly: each alone, and each among ordinary values.
EDGES = [
    *SPECIAL,
    1e-4,
    math.nextafter(1e-4, 0.0),
    math.nextafter(1e-4, 1.0),
    1e-5,
    5e-05,
    9.99e-05,
    0.000123,
    math.nextafter(1e6, 0.0),
    99_999.999_99,
    1e5,
    1e16,
    10.00001,
    -0.5,
    -1e-5,
    -1e7,
    2.0**53,
    0.1 + 0.2,
]


def test_values_written_in_one_call_read_as_go_writes_them() -> None:
    assert value_texts([]) == []
    ordinary = [733.269, 12.0, 0.0, 0.001, 86_400.125]
    for v in EDGES:
        assert value_texts([v]) == go([v]), v
        assert value_texts([*ordinary, v, *ordinary]) == go([*ordinary, v, *ordinary]), v
    assert value_texts(EDGES) == go(EDGES)


def test_every_whole_millisecond_and_count_a_store_holds_is_written_as_go_writes_it() -> None:
    """What the store divides (whole millionths over a million) for the first 10^6 ms, a sample up to 10^6 s
    and every count to 10^5, in lists of a render's size."""
    rng = random.Random(18)
    millis = [m / 1000 for m in range(1_000_000)]
    sampled = [rng.randrange(10**12) / 10**6 for _ in range(100_000)]
    counts = [float(n) for n in range(100_000)]
    for values in (millis, sampled, counts):
        for i in range(0, len(values), 4096):
            part = values[i : i + 4096]
            assert value_texts(part) == go(part)


def test_ordinary_values_take_the_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is the one taken for what a store holds (else the tests above would prove only the
    fallback): none of these values goes through `go_float`."""

    def refuse(value: float) -> str:
        raise AssertionError(f"{value} went through go_float")

    values = [m / 1000 for m in range(0, 10**9, 999_983)] + [float(n) for n in range(500)] + [0.000123]
    monkeypatch.setattr(exposition, "go_float", refuse)
    assert value_texts(values) == go(values)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=50))
def test_any_floats_in_one_call_read_as_go_writes_them(values: list[float]) -> None:
    assert value_texts(values) == go(values)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(min_value=1e-4, max_value=1e6, exclude_max=True) | st.just(0.0), max_size=50))
def test_any_floats_below_a_million_in_one_call_read_as_go_writes_them(values: list[float]) -> None:
    assert value_texts(values) == go(values)


def test_a_stale_source_is_left_out_and_the_others_stay() -> None:
    labels = make_labels(queue="q1")
    stale = healthy("down")
    stale.consecutive_failures = 3
    snap = snapshot({"30m": {labels: Sums(handle_time_seconds=5.0, contacts_handled=1)}})
    assert_same_as_client_python([SourceView(stale, snap), SourceView(healthy("fine"), snap)])


def test_nothing_but_health_before_the_first_poll() -> None:
    assert_same_as_client_python([SourceView(SourceHealth("g1", "genesys", 3), None)])


def test_a_renderer_reuses_a_source_s_lines_until_its_snapshot_changes() -> None:
    labels = make_labels(queue="q1")
    first = snapshot({"30m": {labels: Sums(handle_time_seconds=5.0, contacts_handled=1)}})
    second = snapshot({"30m": {labels: Sums(handle_time_seconds=8.0, contacts_handled=2)}})
    other = snapshot({"30m": {labels: Sums(handle_time_seconds=1.0, contacts_handled=1)}})
    renderer = Renderer(TAIL)
    a, b = healthy("a"), healthy("b")
    for views in (
        [SourceView(a, first), SourceView(b, other)],
        [SourceView(a, first), SourceView(b, other)],  # nothing new: the cached lines
        [SourceView(a, second), SourceView(b, other)],  # a polled again
        [SourceView(a, None), SourceView(b, other)],  # a lost its data
    ):
        reference = without_total_types(generate_openmetrics(Reference(views)))  # type: ignore[no-untyped-call]
        assert renderer.render(views).openmetrics == reference


label_values = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**9), 10**12))


@settings(max_examples=60, deadline=None)
@given(
    groups=st.dictionaries(
        st.tuples(label_values, label_values),
        st.tuples(values, values, values),
        max_size=6,
    ),
    names=st.dictionaries(label_values, label_values, max_size=4),
    source=label_values,
)
def test_any_labels_and_values_match_client_python(
    groups: dict[tuple[str, str], tuple[float, float, float]], names: dict[str, str], source: str
) -> None:
    windows: dict[str, dict[Labels, Sums]] = {
        "30m": {
            make_labels(queue=q, media_type=m): Sums(handle_time_seconds=h, contacts_handled=n, talk_time_seconds=t)
            for (q, m), (h, n, t) in groups.items()
        }
    }
    snap = snapshot(windows, names=Names(queues=names, agents=names))
    rendered = render([SourceView(healthy(source), snap)], TAIL)
    reference = Reference([SourceView(healthy(source), snap)])
    assert rendered.text == without_total_types(generate_text(reference))
    assert rendered.openmetrics == without_total_types(generate_openmetrics(reference))  # type: ignore[no-untyped-call]


def test_the_total_counters_the_way_client_python_writes_them_and_a_strict_openmetrics_parser_reads_them() -> None:
    """The `_total` counters beside the window gauges of the same names: byte for byte as client_python
    writes `unknown` families (but the TYPE line), and valid OpenMetrics, where a counter family
    `aht_handle_time_seconds` would clash with the gauge family of that name."""
    labels = make_labels(media_type="voice", queue=NASTY)
    snap = Snapshot(
        data_end=1772445600,
        fields=frozenset({Field.HANDLE_TIME, Field.CONTACTS_HANDLED}),
        windows={"1h": {labels: Sums(handle_time_seconds=300.0, contacts_handled=2.0)}},
        totals={
            labels: Sums(handle_time_seconds=86_400.125, contacts_handled=321.0),
            make_labels(media_type="chat", queue="q2"): Sums(handle_time_seconds=0.0, contacts_handled=0.0),
        },
        unrecovered=3,
    )
    views = [SourceView(healthy(), snap, counter_lag=7530)]
    assert_same_as_client_python(views)
    body = render(views, TAIL).openmetrics.decode()
    families = {f.name: f for f in parse_openmetrics(body)}  # type: ignore[no-untyped-call]
    assert families["aht_handle_time_seconds"].type == "gauge"
    total = families["aht_handle_time_seconds_total"]
    assert total.type == "unknown"
    assert {s.labels["queue"]: s.value for s in total.samples} == {NASTY: 86_400.125, "q2": 0.0}
    assert families["aht_exporter_totals_lag_seconds"].samples[0].value == 7530
    assert families["aht_exporter_buckets_unrecovered"].samples[0].value == 3
    text = {f.name: f for f in parse_text(render(views, TAIL).text.decode())}
    assert [s.value for s in text["aht_contacts_handled_total"].samples] == [321.0, 0.0]
