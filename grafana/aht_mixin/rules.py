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

from aht_exporter.providers import PROVIDERS

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

ALERT_WINDOW_QUEUE = 'window="1h", queue!="", queue!="none"'
"""The series the abandon-rate and volume alerts judge: the 1h window (a shorter one is too noisy to page
on), queues only. `none` holds the contacts outside any queue (model.MISSING_LABEL): Kore.ai's abandoned
before reaching one, so its abandon rate is 100% by nature."""

ABANDON_RATE_DEFAULT_THRESHOLD = 0.1
"""The abandon rate (abandoned / offered, 0 to 1) of every queue nobody set a threshold for: above the 5 to
8% most contact centers aim for, so that it pages on a real problem only. Set real ones per queue."""

ABANDON_ALERT_MIN_OFFERED = 20
"""Queues offered fewer contacts than this in the window never fire the abandon-rate alert: 2 of 3 callers
hanging up is not a trend."""

VOLUME_COLLAPSE_RATIO = 0.5
"""AhtContactVolumeCollapsed fires when a queue's contacts over the last hour are below this fraction of
the same hour a week before."""

VOLUME_MIN_LAST_WEEK = 20
"""Queues with fewer contacts than this in the same hour a week before never fire the volume alert: 3
contacts instead of 8 is noise."""

VOLUME_LOOKBACK = "1w"
"""How far back the volume alert compares: the same hour of the same weekday."""

ROUTING_LABELS = ("team", "site")
"""The routing labels the shipped alerts carry, from aht_source_labels_info and aht_queue_labels_info (the
config's `labels` and `queue_labels`). A fixed set: PromQL's group_left copies the labels it is told, not
all of them. To route by another label, add its name here and regenerate (README, "Labels for routing")."""

DATA_AGE_DEFAULTS: dict[str, int] = {name: cls.data_age.stale_after for name, cls in PROVIDERS.items()}
"""Each provider's default DataStale threshold, as the provider declares it (`data_age` in its module, see
aht_exporter/providers/base.py `DataAge`): two buckets plus the delay, one whole bucket late. Polls fire at
UTC multiples of `every` plus `delay`, so a healthy source's data is at most one bucket plus the delay old
(plus the seconds a poll takes): a whole bucket of margin below the threshold."""
DATA_AGE_FALLBACK = max(DATA_AGE_DEFAULTS.values())
"""For a provider these rules do not know (an exporter newer than its rules): the most patient default."""

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

API_BUDGET_LOW = 0.1
"""AhtExporterApiBudgetLow fires when a provider endpoint's last reply left less than this fraction of the
requests its rate-limit window allows (aht_exporter_api_quota_remaining / _limit: Genesys reports both)."""

API_BUDGET_RANGE = "15m"
"""The endpoint was called within this range: "while requests continue". An endpoint called hourly (Genesys'
queue and user names) keeps its last reading between calls; that old reading never fires."""

API_BUDGET_FOR = "9m"
"""Two low readings in a row of a source polled every 5m: each reading stands until the next poll replaces
it, so one busy minute (another client's burst) stays pending and resolves. Genesys' window is a minute: a
budget low at two polls five minutes apart is shared with something that spends it all the time."""

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


def contact_records() -> list[Record]:
    """Abandon rate per queue and media type, and contact volume per queue: what the business alerts read."""
    keys = (*SERIES_KEY, "queue", "media_type")
    abandoned, offered = "queue_media_type:aht_contacts_abandoned:sum", "queue_media_type:aht_contacts_offered:sum"
    queue_keys = (*SERIES_KEY, "queue")
    # Offered where the source counts it (Genesys grouped by queue, Kore.ai), else handled (LivePerson, Genesys
    # grouped by agent): contacts that reached the queue either way. Ozonetel counts none: not judged.
    volume = (
        f"{summed('aht_contacts_offered', queue_keys)}\nor\n"
        f"sum{by(queue_keys)} (aht_contacts_handled unless on (source) aht_contacts_offered)"
    )
    return [
        Record(abandoned, summed("aht_contacts_abandoned", keys)),
        Record(offered, summed("aht_contacts_offered", keys)),
        Record("queue_media_type:aht_abandon_rate:ratio", f"{abandoned}\n  / ({offered} > 0)"),
        Record("queue:aht_contact_volume:sum", volume),
    ]


def _most_specific(base: str, tiers: list[tuple[str, str]], fallback: float) -> str:
    """`base` shaped series (value 0) plus the first tier that matches, else `fallback`."""
    parts = [f"{base}\n  + {on} group_left {series}" for on, series in tiers]
    parts.append(f"{base} + {number(fallback)}")
    return "\nor\n".join(parts)


def threshold_records() -> list[Record]:
    out = [
        Record("aht_exporter:data_age_threshold_default_seconds", f"vector({seconds})", {"provider": provider})
        for provider, seconds in DATA_AGE_DEFAULTS.items()
    ]
    # Every source the exporter knows (source_up), also one that never succeeded and has no data_end yet.
    per_source = "max by (source, provider) (0 * aht_exporter_source_up)"
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
    t = "aht_abandon_rate_threshold_ratio"
    out.append(
        Record(
            "queue_media_type:aht_abandon_rate:threshold",
            _most_specific(
                '0 * queue_media_type:aht_abandon_rate:ratio{queue!=""}',
                [
                    ("on (queue, media_type)", f'{t}{{queue!="", media_type!=""}}'),
                    ("on (queue)", f'{t}{{queue!="", media_type=""}}'),
                    ("on (media_type)", f'{t}{{queue="", media_type!=""}}'),
                    ("on ()", f'{t}{{queue="", media_type=""}}'),
                ],
                ABANDON_RATE_DEFAULT_THRESHOLD,
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
    # Which routing labels the alert carries (README, "Labels for routing"): the source's, the queue's
    # (over the source's), or none for an alert without a `source` label (the target's `up`).
    routing: Literal["source", "queue", "none"] = "source"
    # How far back the query reads (an `offset`): before Prometheus holds that much history it returns no
    # series, which the end-to-end test allows for.
    lookback: str = ""

    @property
    def expr(self) -> str:
        expr = f"{parenthesized(self.query)} {self.op} {number(self.threshold)}"
        if self.unless:
            expr += f"\nunless\n{parenthesized(self.unless)}"
        if self.fire_when_absent:
            expr += f"\nor\nabsent({self.query})"
        return routed(expr, self.routing)

    @property
    def grafana_query(self) -> str:
        query = self.query
        if self.unless:
            query = f"{parenthesized(self.query)}\nunless\n{parenthesized(self.unless)}"
        return routed(query, self.routing)

    @property
    def runbook_url(self) -> str:
        return f"{RUNBOOK_BASE}#{self.name.lower()}"

    def annotations(self, value: str) -> dict[str, str]:
        return {
            "summary": self.summary,
            "description": self.description.replace(VALUE, value),
            "runbook_url": self.runbook_url,
        }


def routed(expr: str, scope: Literal["source", "queue", "none"]) -> str:
    """`expr` with the ROUTING_LABELS of its source (and queue) copied onto each series, as a left join.

    `topk by (...) (1, ...)` keeps one info series per source (queue): two of them for one source, as while
    an old and a new pod are both scraped, would otherwise make the join fail. `or on (...)` brings back
    every series the join found no info series for (an exporter older than the info series, a source
    name Prometheus has not scraped yet), so that a missing label never loses an alert. The left side is
    the alert's condition (only the series that fire), so the join costs next to nothing.
    """
    if scope == "none":
        return expr
    labels = ", ".join(ROUTING_LABELS)
    left = parenthesized(expr)
    by_source = f"{left}\n* on (source) group_left ({labels})\n  topk by (source) (1, aht_source_labels_info)"
    if scope == "source":
        return f"{by_source}\nor on (source)\n{left}"
    by_queue = (
        f"{left}\n* on (source, queue) group_left ({labels})\n  topk by (source, queue) (1, aht_queue_labels_info)"
    )
    return f"{by_queue}\nor on (source, queue)\n{by_source}\nor on (source, queue)\n{left}"


def _contact_volume() -> str:
    """Contacts over the last hour per queue, against the same hour VOLUME_LOOKBACK before.

    A queue with no contacts at all in the last hour has no series now: it counts as 0 while its source
    polls fine (a queue that went silent is the collapse this alert is for), never while the source fails
    (AhtExporterSourceDown and AhtExporterDataStale say so)."""
    now = f"queue:aht_contact_volume:sum{{{ALERT_WINDOW_QUEUE}}}"
    before = f"{now} offset {VOLUME_LOOKBACK}"
    return f"(\n  {now}\n  or\n  0 * {before}\n  and on (source) (aht_exporter_source_up == 1)\n)\n/ {before}"


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
        routing="none",  # a scrape target, not a source: route it by the target's labels
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
        # A source that never succeeded has no data_end: its data is as old as the exporter (its process).
        query=(
            "time() - (\n"
            "  aht_exporter_data_end_timestamp_seconds\n"
            "  or\n"
            "  0 * aht_exporter_source_up + ignoring (source, provider) group_left process_start_time_seconds\n"
            ")\n"
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
            "(aht_exporter:data_age_threshold_seconds: two buckets plus the delay), or the source has not "
            "succeeded once in that long since the exporter started. Dashboards show old AHT figures for it, "
            "or none."
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
        name="AhtExporterApiBudgetLow",
        query=(
            "aht_exporter_api_quota_remaining\n"
            "  / on (job, instance, source, provider, endpoint) (aht_exporter_api_quota_limit > 0)"
        ),
        op="<",
        threshold=API_BUDGET_LOW,
        unless=(
            "sum by (job, instance, source, provider, endpoint) "
            f"(increase(aht_exporter_api_requests_total[{API_BUDGET_RANGE}])) == 0"
        ),
        for_=API_BUDGET_FOR,
        severity="warning",
        summary="Provider API budget of source {{ $labels.source }} nearly spent ({{ $labels.endpoint }})",
        description=(
            "The last replies of {{ $labels.provider }} to source {{ $labels.source }} on endpoint "
            f"{{{{ $labels.endpoint }}}} left {{{{ {VALUE} | humanizePercentage }}}} of the requests its rate-limit "
            "window allows (aht_exporter_api_quota_remaining / aht_exporter_api_quota_limit), and the source "
            "keeps calling it. The budget is the OAuth client's, shared with whatever else uses the same "
            "client: 429s and slower polls come next."
        ),
        panel="API budget left",
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
        routing="none",  # per exporter, not per source: route it by the target's labels
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
        routing="queue",
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
    Alert(
        name="AhtAbandonRateAboveThreshold",
        query=(
            f"queue_media_type:aht_abandon_rate:ratio{{{ALERT_WINDOW_QUEUE}}}\n"
            "  - queue_media_type:aht_abandon_rate:threshold"
        ),
        op=">",
        threshold=0,
        unless=f"queue_media_type:aht_contacts_offered:sum < {ABANDON_ALERT_MIN_OFFERED}",
        for_="15m",
        severity="warning",
        routing="queue",
        summary="Abandon rate of queue {{ $labels.queue }} ({{ $labels.media_type }}) is above its threshold",
        description=(
            "Of the contacts offered to queue {{ $labels.queue }} ({{ $labels.media_type }}) on source "
            "{{ $labels.source }} over the last {{ $labels.window }}, the share abandoned exceeds its threshold "
            f"(queue_media_type:aht_abandon_rate:threshold) by {{{{ {VALUE} | humanizePercentage }}}} "
            "(percentage points). The queue's name: "
            'aht_queue_info{queue="{{ $labels.queue }}"}.'
        ),
        dashboard=DASHBOARD_OVERVIEW,
        panel="Abandon rate",
    ),
    Alert(
        name="AhtContactVolumeCollapsed",
        query=_contact_volume(),
        op="<",
        threshold=VOLUME_COLLAPSE_RATIO,
        unless=f"queue:aht_contact_volume:sum offset {VOLUME_LOOKBACK} < {VOLUME_MIN_LAST_WEEK}",
        for_="15m",
        severity="warning",
        routing="queue",
        lookback=VOLUME_LOOKBACK,
        summary="Contacts to queue {{ $labels.queue }} on {{ $labels.source }} collapsed against last week",
        description=(
            "Queue {{ $labels.queue }} on source {{ $labels.source }} received "
            f"{{{{ {VALUE} | humanizePercentage }}}} of the contacts of the same hour a week ago "
            f"(offered, or handled where the provider counts no offers; at least {VOLUME_MIN_LAST_WEEK} then). "
            "Contacts may be failing to reach it: routing, IVR, a number or a chat entry point. The queue's "
            'name: aht_queue_info{queue="{{ $labels.queue }}"}.'
        ),
        dashboard=DASHBOARD_OVERVIEW,
        panel="Contacts handled, offered, answered, abandoned",
    ),
)


# --- rendering -------------------------------------------------------------------------------------


def prometheus_groups() -> list[dict[str, Any]]:
    return [
        {
            "name": "aht-exporter.rules",
            "rules": [r.rule() for r in (*aht_records(), *contact_records(), *threshold_records())],
        },
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
#   aht_abandon_rate_threshold_ratio{{queue="<id>"}}              the same four tiers, as a fraction (0.15: 15%)
#
# AhtAbandonRateAboveThreshold fires above the most specific one; with none, {ABANDON_RATE_DEFAULT_THRESHOLD}.
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
#    - record: aht_abandon_rate_threshold_ratio
#      expr: vector(0.15)
#      labels:
#        queue: <queue id>
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
