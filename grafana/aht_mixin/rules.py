"""Prometheus recording and alerting rules, and the Grafana-managed alert rules that mirror them.

Each alert is one `Alert` record: a quantity (`query`), a comparison with a number, optionally the
series it never fires for (`unless`). From that one record come the Prometheus rule
(`(query) > 0 unless ...`) and the Grafana rule (query A, reduce B = last of A, threshold C on B), so
the two cannot drift apart. The end-to-end test evaluates each `query` against the demo: it returns
series on a healthy system too, where the alert itself returns none.

Thresholds that differ per queue or per source are series, not numbers baked into the rules: users
set them as recording rules of their own (deploy/prometheus/aht-thresholds.rules.yml, shipped empty;
the demo's are in demo-thresholds.rules.yml; docs/alerts.md),
and the rules below pick the most specific one, with a built-in default when none is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .promql import JOB, SERIES_KEY, by, indent, number, parenthesized, summed

RUNBOOK_BASE = "docs/alerts.md"
"""Where `runbook_url` points: the runbook in this repository. Set it to the URL your git host serves
docs/alerts.md at (then regenerate) to make the links in notifications clickable."""

DASHBOARD_OVERVIEW = "aht-overview"
DASHBOARD_HEALTH = "aht-exporter-health"

# --- recording rules -------------------------------------------------------------------------------

LEVELS: dict[str, tuple[str, ...]] = {
    "queue_media_type": ("queue", "media_type"),
    "queue": ("queue",),
    "media_type": ("media_type",),
}
"""Aggregation levels of the recorded AHT; each also keeps source, provider and window."""

AHT_ALERT_WINDOW = "1h"
"""The window the AHT alert looks at, in every source that exports it. Shorter windows are too noisy to
page on, longer ones too slow."""

AHT_ALERT_FALLBACK_WINDOW = "2h"
"""The window the AHT alert looks at in sources that export no AHT_ALERT_WINDOW at all (Ozonetel: 2h is its
only window). A source exporting both is judged on AHT_ALERT_WINDOW alone, so it alerts once per queue."""

AHT_ALERT_MIN_CONTACTS = 5
"""Queues that handled fewer contacts than this in the window never fire the AHT alert (one long call is
not a trend). Sources that export no counts (Ozonetel) are not filtered."""

AHT_DEFAULT_THRESHOLD = 1200
"""Seconds; the AHT threshold of every queue nobody set one for. Above any healthy queue's AHT on
purpose: set real ones per queue."""

DEFAULT_DELAY = 60
"""The exporter's default `delay` after a bucket boundary."""

DATA_AGE_DEFAULTS: dict[str, int] = {
    # 2 buckets + delay (the threshold): data one whole bucket late. Bucket sizes:
    # docs/providers/<vendor>.md, Configuration.
    # Polls fire at UTC multiples of `every` plus `delay`, so a healthy source's data is at most one bucket
    # plus the delay old (plus the seconds a poll takes): a whole bucket of margin below the threshold.
    "genesys": 2 * 1800 + DEFAULT_DELAY,  # 30m buckets by default (15m possible: override)
    "liveperson": 2 * 300 + DEFAULT_DELAY,  # 5m buckets
    "koreai": 2 * 900 + DEFAULT_DELAY,  # 15m intervals in Kore.ai's sample
    "ozonetel": 2 * 300,  # no buckets: data ends when the poll ran (every 5m), no delay
}
DATA_AGE_FALLBACK = DATA_AGE_DEFAULTS["genesys"]
"""For a provider not listed above: assume 30-minute buckets."""

RATE_LIMIT_RANGE = "45m"
"""The range AhtExporterRateLimited looks back over. The counter moves only during polls, so the range
must hold at least one poll of the slowest source: any `every` up to 30m, with 15 minutes left for a
poll's retries and the scrape. A source polled every 45m or more never holds the alert: its counter is
flat for a whole range between polls (raise this, and RATE_LIMIT_FOR with it, for such a source)."""

RATE_LIMIT_FOR = "1h"
"""Longer than RATE_LIMIT_RANGE, so one burst (true for one range after it) never fires: the provider
must have rate-limited the source again within every 45 minutes, for an hour."""

OZONETEL_TOKENS_PER_HOUR = 10
"""Ozonetel issues at most this many tokens an hour per account, and each new one cancels the account's
previous token (docs/providers/ozonetel.md); the exporter itself refuses to generate one more."""

TOKEN_BUDGET_WARN = 8
"""AhtExporterTokenBudget fires at this many tokens in an hour: two before the cap. A healthy account needs
one or two an hour (a token serves 55 minutes)."""

TOKEN_BUDGET_THRESHOLD = TOKEN_BUDGET_WARN - 0.5
"""`increase()` extrapolates to the ends of its range: 7 tokens read up to 7 * 60 / (60 - scrape interval in
minutes), 7.06 at a 30s scrape, and 8 tokens read 8 or a little more. Halfway between tells the two apart at
any scrape interval under 4 minutes."""

DATA_AGE_FOR = "2m"
"""How long data must stay past its threshold before AhtExporterDataStale fires. Data that is exactly one
bucket late (one failed poll of a 5-minute-bucket source; every poll of a source whose `every` is longer
than its bucket) crosses the threshold while the catching-up poll runs and until the next scrape: seconds,
plus up to a scrape interval. 2 minutes absorbs that at one-minute rule evaluation, so a poll in progress
never pages; data that stays late fires 2 minutes after it passed the threshold."""


@dataclass(frozen=True)
class Record:
    record: str
    expr: str
    labels: dict[str, str] | None = None

    def rule(self) -> dict[str, Any]:
        out: dict[str, Any] = {"record": self.record, "expr": self.expr}
        if self.labels:
            out["labels"] = dict(self.labels)
        return out


def aht_records() -> list[Record]:
    out: list[Record] = []
    for level, labels in LEVELS.items():
        keys = (*SERIES_KEY, *labels)
        handle, handled = f"{level}:aht_handle_time_seconds:sum", f"{level}:aht_contacts_handled:sum"
        out.append(Record(handle, summed("aht_handle_time_seconds", keys)))
        out.append(Record(handled, summed("aht_contacts_handled", keys)))
        expr = f"{handle}\n  / ({handled} > 0)"
        if level == "queue_media_type":
            # Providers that only give a ready-made average per queue (Ozonetel campaigns) join in at
            # their own grain, passed through as given: `max` only drops the scrape's job/instance.
            expr += (
                f"\nor\nmax{by(keys)} (\n"
                '  aht_seconds{queue!="", agent=""}\n'
                "  unless on (source) aht_contacts_handled\n)"
            )
        out.append(Record(f"{level}:aht_seconds:ratio", expr))
    return out


def _most_specific(base: str, tiers: list[tuple[str, str]], fallback: int) -> str:
    """`base` shaped series (value 0) plus the first tier that matches, else `fallback`."""
    parts = [f"{base}\n  + {on} group_left {series}" for on, series in tiers]
    parts.append(f"{base} + {fallback}")
    return "\nor\n".join(parts)


def threshold_records() -> list[Record]:
    out = [
        Record("aht_exporter:data_age_threshold_default_seconds", f"vector({seconds})", {"provider": provider})
        for provider, seconds in DATA_AGE_DEFAULTS.items()
    ]
    per_source = "max by (source, provider) (0 * aht_exporter_data_end_timestamp_seconds)"
    out.append(
        Record(
            "aht_exporter:data_age_threshold_seconds",
            _most_specific(
                per_source,
                [
                    ("on (source)", "aht_exporter_data_age_threshold_seconds"),
                    ("on (provider)", "aht_exporter:data_age_threshold_default_seconds"),
                ],
                DATA_AGE_FALLBACK,
            ),
        )
    )
    per_queue = '0 * queue_media_type:aht_seconds:ratio{queue!=""}'
    t = "aht_threshold_seconds"
    out.append(
        Record(
            "queue_media_type:aht_seconds:threshold",
            _most_specific(
                per_queue,
                [
                    ("on (queue, media_type)", f'{t}{{queue!="", media_type!=""}}'),
                    ("on (queue)", f'{t}{{queue!="", media_type=""}}'),
                    ("on (media_type)", f'{t}{{queue="", media_type!=""}}'),
                    ("on ()", f'{t}{{queue="", media_type=""}}'),
                ],
                AHT_DEFAULT_THRESHOLD,
            ),
        )
    )
    return out


# --- alerts ----------------------------------------------------------------------------------------

VALUE = "$VALUE"
"""Stands for the alert's value in annotation templates: `$value` in Prometheus, the reduced query in Grafana."""


@dataclass(frozen=True)
class Alert:
    name: str
    query: str
    op: Literal[">", "<"]
    threshold: float
    severity: Literal["critical", "warning"]
    summary: str
    description: str
    for_: str = "0s"
    unless: str | None = None
    fire_when_absent: bool = False
    dashboard: str = DASHBOARD_HEALTH
    panel: str = ""

    @property
    def expr(self) -> str:
        expr = f"{parenthesized(self.query)} {self.op} {number(self.threshold)}"
        if self.unless:
            expr += f"\nunless\n{parenthesized(self.unless)}"
        if self.fire_when_absent:
            expr += f"\nor\nabsent({self.query})"
        return expr

    @property
    def grafana_query(self) -> str:
        if self.unless:
            return f"{parenthesized(self.query)}\nunless\n{parenthesized(self.unless)}"
        return self.query

    @property
    def runbook_url(self) -> str:
        return f"{RUNBOOK_BASE}#{self.name.lower()}"

    def annotations(self, value: str) -> dict[str, str]:
        return {
            "summary": self.summary,
            "description": self.description.replace(VALUE, value),
            "runbook_url": self.runbook_url,
        }


def _aht_per_queue() -> str:
    """The AHT the alert judges: one series per source, queue and media type, never one per window.

    Sources grouped by agent only (queue="") have no queue to hold to a per-queue threshold: left out.
    """
    ratio = "queue_media_type:aht_seconds:ratio"
    main, fallback = f'window="{AHT_ALERT_WINDOW}"', f'window="{AHT_ALERT_FALLBACK_WINDOW}"'
    queue = 'queue!=""'
    # "Exports the main window" is asked of the sums and of the ratio: a source whose every queue handled
    # no contact in the last hour has no ratio at 1h, and must not fall back to its 2h AHT for it.
    has_main = f"queue_media_type:aht_contacts_handled:sum{{{main}}} or {ratio}{{{main}}}"
    return f"{ratio}{{{main}, {queue}}}\nor (\n  {ratio}{{{fallback}, {queue}}}\n  unless on (source) ({has_main})\n)"


ALERTS: tuple[Alert, ...] = (
    Alert(
        name="AhtExporterDown",
        query=f'up{{job="{JOB}"}}',
        op="<",
        threshold=1,
        for_="5m",
        severity="critical",
        fire_when_absent=True,
        summary=(
            "aht-exporter down or missing: job {{ $labels.job }}{{ with $labels.instance }}, instance {{ . }}{{ end }}"
        ),
        description=(
            "For 5 minutes Prometheus has failed to scrape this aht-exporter target, or has had no target of "
            "job {{ $labels.job }} at all. No AHT data is collected from its sources, and the exporter's "
            "other alerts cannot fire for them."
        ),
        panel="Targets up",
    ),
    Alert(
        name="AhtExporterSourceDown",
        query="aht_exporter_source_up",
        op="<",
        threshold=1,
        for_="10m",
        severity="warning",
        summary="Source {{ $labels.source }} ({{ $labels.provider }}) fails to poll",
        description=(
            "Every poll of source {{ $labels.source }} ({{ $labels.provider }}) for 10 minutes has failed. "
            "Its data series are withdrawn after stale_after consecutive failures; the exporter's status "
            "page and its `poll failed` log lines say why."
        ),
        panel="Source up",
    ),
    Alert(
        name="AhtExporterDataStale",
        query=(
            "time() - aht_exporter_data_end_timestamp_seconds\n"
            "  - on (source, provider) group_left aht_exporter:data_age_threshold_seconds"
        ),
        op=">",
        threshold=0,
        for_=DATA_AGE_FOR,
        severity="warning",
        summary="Data of source {{ $labels.source }} ({{ $labels.provider }}) is stale",
        description=(
            "The newest closed bucket exported for source {{ $labels.source }} ended "
            f"{{{{ {VALUE} | humanizeDuration }}}} longer ago than its threshold "
            "(aht_exporter:data_age_threshold_seconds: two buckets plus the delay). "
            "Dashboards show old AHT figures for it."
        ),
        panel="Data age",
    ),
    Alert(
        name="AhtExporterRateLimited",
        query=f"increase(aht_exporter_rate_limited_total[{RATE_LIMIT_RANGE}])",
        op=">",
        threshold=0,
        for_=RATE_LIMIT_FOR,
        severity="warning",
        summary="Provider API rate-limits source {{ $labels.source }} ({{ $labels.provider }})",
        description=(
            "For an hour, every 45 minutes brought rate-limited responses for source "
            f"{{{{ $labels.source }}}} ({{{{ {VALUE} | humanize }}}} in the last 45 minutes). Polls slow down "
            "and may miss their deadline; the API quota is shared with whatever else uses it."
        ),
        panel="Rate-limited responses",
    ),
    Alert(
        name="AhtExporterSeriesDropped",
        query="increase(aht_exporter_series_dropped_total[1h])",
        op=">",
        threshold=0,
        severity="warning",
        summary="Source {{ $labels.source }} drops series at its max_series limit",
        description=(
            f"Source {{{{ $labels.source }}}} dropped {{{{ {VALUE} | humanize }}}} data series in the last hour "
            "because it has more label sets than its max_series. Its sums and AHT are incomplete."
        ),
        panel="Series dropped by max_series",
    ),
    Alert(
        name="AhtExporterTokenBudget",
        # Summed over the sources of each exporter, not per source: sources of one Ozonetel account (api_url,
        # user_name) share one token, counted on whichever source's poll generated it, so per source an
        # account's spend is split and 8 could hide as 4 + 4. The series carry no account: the exporter is
        # the smallest group that holds every source of an account (docs/alerts.md says why, and the limit).
        query='sum without (source) (\n  increase(aht_exporter_tokens_issued_total{provider="ozonetel"}[1h])\n)',
        op=">",
        threshold=TOKEN_BUDGET_THRESHOLD,
        severity="warning",
        summary="Ozonetel tokens near the hourly cap: job {{ $labels.job }}, instance {{ $labels.instance }}",
        description=(
            f'The Ozonetel sources of this exporter generated {{{{ printf "%.0f" {VALUE} }}}} access tokens in the '
            f"last hour. Ozonetel issues at most {OZONETEL_TOKENS_PER_HOUR} an hour per account and each new one "
            f"cancels the account's previous token; at {OZONETEL_TOKENS_PER_HOUR} the exporter generates no more, "
            "and its Ozonetel polls fail until the oldest is an hour old. Sources of one account share one token, "
            "counted on whichever source generated it, so every Ozonetel source of the exporter is summed (with "
            "several accounts, their total). A healthy account needs one or two an hour."
        ),
        panel="Tokens issued in the last hour",
    ),
    Alert(
        name="AhtAboveThreshold",
        query=f"(\n{indent(_aht_per_queue())}\n)\n  - queue_media_type:aht_seconds:threshold",
        op=">",
        threshold=0,
        unless=f"queue_media_type:aht_contacts_handled:sum < {AHT_ALERT_MIN_CONTACTS}",
        for_="15m",
        severity="warning",
        summary="AHT of queue {{ $labels.queue }} ({{ $labels.media_type }}) is above its threshold",
        description=(
            "The average handle time of queue {{ $labels.queue }} ({{ $labels.media_type }}) on source "
            f"{{{{ $labels.source }}}} over the last {{{{ $labels.window }}}} is {{{{ {VALUE} | humanizeDuration }}}} "
            "above its threshold (queue_media_type:aht_seconds:threshold). The queue's name: "
            'aht_queue_info{queue="{{ $labels.queue }}"}.'
        ),
        dashboard=DASHBOARD_OVERVIEW,
        panel="AHT by queue",
    ),
)


# --- rendering -------------------------------------------------------------------------------------


def prometheus_groups() -> list[dict[str, Any]]:
    return [
        {"name": "aht-exporter.rules", "rules": [r.rule() for r in (*aht_records(), *threshold_records())]},
        {"name": "aht-exporter.alerts", "rules": [prometheus_alert(a) for a in ALERTS]},
    ]


def prometheus_alert(alert: Alert) -> dict[str, Any]:
    out: dict[str, Any] = {"alert": alert.name, "expr": alert.expr}
    if alert.for_ != "0s":
        out["for"] = alert.for_
    out["labels"] = {"severity": alert.severity}
    out["annotations"] = alert.annotations("$value")
    return out


# --- thresholds: the users' (empty) and the demo's -------------------------------------------------

# The demo's thresholds, in deploy/prometheus/demo-thresholds.rules.yml: loaded by the docker compose
# Prometheus and the end-to-end test only, never shipped as anyone's live rules. The queue ids are the
# demo's (`aht-exporter --demo`, seed 1), so `docker compose up` shows each threshold tier at work.
DEMO_SUPPORT_QUEUE = "2ed6d873-da93-468a-ba6f-02e8c1c270c6"
DEMO_BILLING_QUEUE = "294b4769-53a3-4b3f-96b3-0270fc7a6d7a"

DEMO_THRESHOLDS: tuple[Record, ...] = (
    Record("aht_threshold_seconds", "vector(1800)", {"media_type": "email"}),
    Record("aht_threshold_seconds", "vector(900)", {"queue": DEMO_BILLING_QUEUE}),
    Record("aht_threshold_seconds", "vector(600)", {"queue": DEMO_SUPPORT_QUEUE, "media_type": "voice"}),
    Record(
        "aht_exporter_data_age_threshold_seconds",
        f"vector(2 * 900 + {DEFAULT_DELAY})",
        {"source": "demo-genesys-agents"},
    ),
)

THRESHOLDS_GROUP = "aht-exporter.thresholds"


def _how_to_set() -> str:
    d = DATA_AGE_DEFAULTS
    return f"""\
# Each threshold is a recording rule of a constant, labelled with what it is for:
#
#   aht_threshold_seconds{{queue="<id>", media_type="<type>"}}   one queue, one media type
#   aht_threshold_seconds{{queue="<id>"}}                        one queue, every media type
#   aht_threshold_seconds{{media_type="<type>"}}                 every queue of that media type
#   aht_threshold_seconds                                      every queue (no labels)
#
# The most specific one that matches a queue wins; with none, {AHT_DEFAULT_THRESHOLD} s. `queue` is the provider's
# queue id (aht_queue_info maps ids to names). Define each label set once: two for one queue are an error.
#
#   aht_exporter_data_age_threshold_seconds{{source="<name>"}}   AhtExporterDataStale fires past it
#
# Without one, a source gets its provider's default, two buckets plus the delay ({DEFAULT_DELAY} s):
# genesys {d["genesys"]} (30m buckets), liveperson {d["liveperson"]}, koreai {d["koreai"]}, ozonetel {d["ozonetel"]}.
# Set it for a source with another bucket or delay, or an `every` longer than its bucket:
# 2 * max(bucket, every) + delay, in seconds.
"""


USER_THRESHOLDS_EXAMPLE = """\
# Example (replace `rules: []` below with a list like this; ids and names are placeholders):
#
#    rules:
#    - record: aht_threshold_seconds
#      expr: vector(600)
#      labels:
#        queue: <queue id>
#        media_type: voice
#    - record: aht_threshold_seconds
#      expr: vector(1800)
#      labels:
#        media_type: email
#    - record: aht_exporter_data_age_threshold_seconds
#      expr: vector(2 * 900 + 60)
#      labels:
#        source: <source with 15-minute buckets>
"""


def thresholds_header() -> str:
    """The users' thresholds file: empty, so nobody inherits thresholds made for someone else's queues."""
    return (
        "# Your thresholds: AHT per queue and data age per source. The rules in aht-exporter.rules.yml read\n"
        "# them. This file is yours: it ships empty (every queue gets the built-in default, every source its\n"
        "# provider's), and you load it next to aht-exporter.rules.yml. The demo's thresholds are in\n"
        "# demo-thresholds.rules.yml, for the demo only.\n#\n" + _how_to_set() + "#\n" + USER_THRESHOLDS_EXAMPLE
    )


def thresholds_groups() -> list[dict[str, Any]]:
    return [{"name": THRESHOLDS_GROUP, "rules": []}]


def demo_thresholds_header() -> str:
    return (
        "# The demo's thresholds, for `aht-exporter --demo` only: its queue ids and sources. Loaded by the docker\n"
        "# compose Prometheus (deploy/prometheus/prometheus.yml) and by tests/e2e/test_every_query.py instead of\n"
        "# aht-thresholds.rules.yml, never by a real deployment. Set your own in aht-thresholds.rules.yml.\n#\n"
        + _how_to_set()
    )


def demo_thresholds_groups() -> list[dict[str, Any]]:
    return [{"name": THRESHOLDS_GROUP, "rules": [r.rule() for r in DEMO_THRESHOLDS]}]


# --- Grafana-managed alert rules -------------------------------------------------------------------

DATASOURCE_UID = "aht-prometheus"
"""The uid of the Prometheus data source in grafana/provisioning/datasources."""

_GRAFANA_OPS = {">": "gt", "<": "lt"}


def _plain(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def grafana_rule(alert: Alert, panel_ids: dict[tuple[str, str], int]) -> dict[str, Any]:
    expr_ds = {"type": "__expr__", "uid": "__expr__"}
    annotations = alert.annotations("$values.B.Value")
    if alert.panel:
        annotations["__dashboardUid__"] = alert.dashboard
        annotations["__panelId__"] = str(panel_ids[(alert.dashboard, alert.panel)])
    return {
        "uid": "".join("-" + c.lower() if c.isupper() else c for c in alert.name).lstrip("-"),
        "title": alert.name,
        "condition": "C",
        "data": [
            {
                "refId": "A",
                "relativeTimeRange": {"from": 3600, "to": 0},
                "datasourceUid": DATASOURCE_UID,
                "model": {
                    "refId": "A",
                    "expr": alert.grafana_query,
                    "instant": True,
                    "range": False,
                    "editorMode": "code",
                    "legendFormat": "__auto",
                    "intervalMs": 60000,
                    "maxDataPoints": 43200,
                },
            },
            {
                "refId": "B",
                "relativeTimeRange": {"from": 0, "to": 0},
                "datasourceUid": "__expr__",
                "model": {
                    "refId": "B",
                    "type": "reduce",
                    "expression": "A",
                    "reducer": "last",
                    "settings": {"mode": "dropNN"},
                    "datasource": expr_ds,
                },
            },
            {
                "refId": "C",
                "relativeTimeRange": {"from": 0, "to": 0},
                "datasourceUid": "__expr__",
                "model": {
                    "refId": "C",
                    "type": "threshold",
                    "expression": "B",
                    "conditions": [
                        {"evaluator": {"type": _GRAFANA_OPS[alert.op], "params": [_plain(alert.threshold)]}}
                    ],
                    "datasource": expr_ds,
                },
            },
        ],
        # No series is the healthy state of every query but the target's `up`, whose absence is an outage.
        "noDataState": "Alerting" if alert.fire_when_absent else "OK",
        "execErrState": "Error",
        "for": alert.for_,
        "annotations": annotations,
        "labels": {"severity": alert.severity},
        "isPaused": False,
    }


def grafana_alerting(panel_ids: dict[tuple[str, str], int]) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": "aht-exporter",
                "folder": "AHT exporter",
                "interval": "1m",
                "rules": [grafana_rule(a, panel_ids) for a in ALERTS],
            }
        ],
    }
