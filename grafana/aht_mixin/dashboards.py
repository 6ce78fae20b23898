"""The two dashboards: AHT overview (the numbers) and Exporter health (whether to trust them).

Panels query the exporter's own series, not the recording rules, so both dashboards work on a
Prometheus that has not loaded deploy/prometheus (only the data-age threshold line needs the rules).
Counters move once per poll (every 5 minutes by default), so rates and increases use fixed 15m and 1h
ranges: `$__rate_interval` (a few scrape intervals) would mostly see no poll at all.
"""

from __future__ import annotations

from typing import Any

from . import grafana as g
from .promql import (
    LAG,
    RANGE_END,
    aht,
    averages_only,
    exact_aht,
    exact_increase,
    grouped_by,
    indent,
    selector,
    source_lag,
    summed,
    with_name,
)
from .rules import (
    API_BUDGET_LOW,
    DASHBOARD_HEALTH,
    DASHBOARD_OVERVIEW,
    DATA_AGE_DEFAULTS,
    OZONETEL_TOKENS_PER_HOUR,
    TOKEN_BUDGET_WARN,
)

# --- AHT overview ----------------------------------------------------------------------------------

SOURCE = ['source=~"$source"', 'provider=~"$provider"']
F = [*SOURCE, 'window="$window"', 'media_type=~"$media_type"', 'queue=~"$queue"']
"""The overview's filters. `=~".*"` (All) also matches series without the label, so a source grouped by
agent only stays in when no media type or queue is picked, and drops out when one is."""

F_ANY_WINDOW = [*SOURCE, 'media_type=~"$media_type"', 'queue=~"$queue"']
"""Providers with ready-made averages export one fixed window of their own (Ozonetel: 2h)."""

AGENT_TOP = 10

EXACT_ROW = "Over the dashboard's time range (exact): sources with a lag of ${lag}s"
EXACT_NOTE = (
    " Exact: the growth of the _total counters between the range's start and end, each read the sources' "
    "lag ($lag s, aht_exporter_totals_lag_seconds) later (docs/exact-ranges.md). The range must end at least "
    "the lag ago: a later end shows nothing (for today so far, end the range at now-${lag}s). Ranges snap to "
    "whole buckets: a range off the sources' bucket grid counts the whole buckets nearest to its ends. One row "
    "per lag: sources with another lag are in their own row."
)
EXACT_NO_VALUE = "No final buckets here: the range must end at least the lag (row title) ago"


def _exact_for(expr: str, kind: str) -> str:
    """`expr` (an exact range) for the sources whose lag is this row's `$lag` and that are grouped by `kind`.

    Reading a source's counters at another source's lag is not exact, so each row keeps its own sources. A
    source grouped by agent only has no queue label and would show up as one nameless queue holding all its
    contacts; its counters at the range's end tell (the window gauges may be gone for an old range)."""
    grouped = selector("aht_contacts_handled_total", [*SOURCE, f'{kind}!=""'])
    return (
        f"{expr}\nand on (source) (\n  (\n{indent(source_lag(SOURCE), 4)}\n  ) == {LAG}\n)\n"
        f"and on (source) group by (source) ({grouped} @ {RANGE_END} offset -{LAG}s)"
    )


def exact_range_panels() -> list[g.Panel]:
    """AHT and contacts over exactly the dashboard's time range, in a row repeated per lag."""
    by_queue = ["source", "queue"]

    def named(expr: str) -> str:
        return f"sort_desc(\n{indent(with_name(_exact_for(expr, 'queue'), 'queue', SOURCE[:1]))}\n)"

    return [
        g.row(EXACT_ROW, repeat="lag"),
        g.bargauge(
            "AHT by queue over the time range",
            "Handle time / contacts handled per queue and source over exactly the dashboard's time range "
            "(sources grouped by queue); names from aht_queue_info. A queue without contacts handled in the "
            "range shows no bar." + EXACT_NOTE,
            g.targets(
                (named(exact_aht(by_queue, F_ANY_WINDOW)), "{{queue_name}} {{queue}} ({{source}})"), instant=True
            ),
            unit="s",
            width=8,
            no_value=EXACT_NO_VALUE,
        ),
        g.bargauge(
            "AHT by media type over the time range",
            "Handle time / contacts handled per media type and source over exactly the dashboard's time range "
            "(sources grouped by media type)." + EXACT_NOTE,
            g.targets(
                (
                    "sort_desc(\n"
                    + indent(_exact_for(exact_aht(["source", "media_type"], F_ANY_WINDOW), "media_type"))
                    + "\n)",
                    "{{media_type}} ({{source}})",
                ),
                instant=True,
            ),
            unit="s",
            width=8,
            no_value=EXACT_NO_VALUE,
        ),
        g.bargauge(
            "Contacts handled by queue over the time range",
            "Contacts handled per queue and source over exactly the dashboard's time range (sources grouped by "
            "queue): what the AHT beside it stands on." + EXACT_NOTE,
            g.targets(
                (
                    named(exact_increase("aht_contacts_handled_total", by_queue, F_ANY_WINDOW)),
                    "{{queue_name}} {{queue}} ({{source}})",
                ),
                instant=True,
            ),
            unit="short",
            width=8,
            no_value=EXACT_NO_VALUE,
        ),
    ]


def _agents_ranked(fn: str) -> str:
    ranked = with_name(aht(["source", "agent"], [*F, 'agent!=""'], min_contacts="$min_contacts"), "agent", SOURCE[:1])
    order = "sort_desc" if fn == "topk" else "sort"
    return f"{order}(\n  {fn}({AGENT_TOP},\n{indent(ranked, 4)}\n  )\n)"


def _provider_averages(kind: str) -> str:
    labels = ['queue!=""', 'agent=""'] if kind == "queue" else ['agent!=""']
    return f"sort_desc(\n{indent(with_name(averages_only([*F_ANY_WINDOW, *labels]), kind, SOURCE[:1]))}\n)"


def overview_panels() -> list[g.Panel]:
    per_contact = [
        (
            f"sum({selector(f'aht_{part}_time_seconds', F)})\n  / (sum({selector('aht_contacts_handled', F)}) > 0)",
            name,
        )
        for part, name in (("talk", "talk"), ("hold", "hold"), ("acw", "after-contact work"))
    ]
    components = g.timeseries(
        "Handle-time components per contact: $source",
        "Talk, hold and after-contact work per contact handled, stacked; their sum is the handle time per "
        "contact (dashed: AHT). Each component's sum over the window divided by the contacts handled. One "
        "panel per source. Empty for providers that report no components.",
        g.targets(*per_contact, (aht([], F), "AHT")),
        unit="s",
        stacked=True,
        overrides=[g.dashed("AHT")],
    )
    components["repeat"] = "source"
    components["repeatDirection"] = "h"
    components["maxPerRow"] = 2
    return [
        g.row("Average handle time"),
        g.stat(
            "AHT per source",
            "Handle time / contacts handled over the selected window, for each source. Sources are never "
            "added together: two sources may count the same contacts (as the demo's two do).",
            g.targets((aht(["source"], F), "{{source}}")),
            unit="s",
        ),
        g.stat(
            "Contacts handled",
            "Contacts handled in the selected window, per source.",
            g.targets((summed("aht_contacts_handled", ["source"], F), "{{source}}")),
            unit="short",
        ),
        g.stat(
            "Data age",
            "How old the newest closed bucket is: time() - aht_exporter_data_end_timestamp_seconds. Up to "
            "one bucket plus the delay is normal; red past two buckets of 30 minutes plus the delay (the "
            "AhtExporterDataStale default for Genesys).",
            g.targets(
                (
                    f"time() - max by (source) ({selector('aht_exporter_data_end_timestamp_seconds', SOURCE)})",
                    "{{source}}",
                )
            ),
            unit="s",
            steps=((None, "green"), (2400, "orange"), (DATA_AGE_DEFAULTS["genesys"], "red")),
        ),
        g.timeseries(
            "AHT by media type",
            "sum(handle time) / sum(contacts handled) per media type and source, over the selected window "
            "(sources grouped by media type).",
            g.targets((grouped_by(aht(["source", "media_type"], F), "media_type"), "{{source}} {{media_type}}")),
            unit="s",
        ),
        g.timeseries(
            "AHT by queue",
            "sum(handle time) / sum(contacts handled) per queue and source, over the selected window (sources "
            "grouped by queue); names from aht_queue_info. A queue without a known name shows its id only; an "
            "empty id holds the contacts outside any queue.",
            g.targets(
                (
                    with_name(grouped_by(aht(["source", "queue"], F), "queue"), "queue", SOURCE[:1]),
                    "{{source}} {{queue_name}} {{queue}}",
                )
            ),
            unit="s",
        ),
        g.table(
            "AHT by queue and media type",
            "One row per source, queue and media type, as of now: AHT (sum of handle time / sum of "
            "contacts handled) and the contact counts behind it.",
            g.targets(
                *(
                    (with_name(grouped_by(q, "queue", "media_type"), "queue", SOURCE[:1]), "")
                    for q in (
                        aht(["source", "queue", "media_type"], F),
                        summed("aht_contacts_handled", ["source", "queue", "media_type"], F),
                        summed("aht_contacts_offered", ["source", "queue", "media_type"], F),
                        summed("aht_contacts_abandoned", ["source", "queue", "media_type"], F),
                    )
                ),
                instant=True,
                table=True,
            ),
            columns={
                "Value #A": ("AHT", "s"),
                "Value #B": ("Contacts handled", "short"),
                "Value #C": ("Offered", "short"),
                "Value #D": ("Abandoned", "short"),
            },
            hide=("job", "instance"),
            order=(
                "source",
                "queue_name",
                "queue",
                "media_type",
                "Value #A",
                "Value #B",
                "Value #C",
                "Value #D",
            ),
        ),
        *exact_range_panels(),
        g.row("Handle-time components"),
        components,
        g.row("Contacts"),
        g.timeseries(
            "Contacts handled, offered, answered, abandoned",
            "Contacts in the selected window (a rolling count, not a rate), per source. Offered and abandoned "
            "contacts belong to a queue: sources grouped by agent have none.",
            g.targets(
                *(
                    (summed(f"aht_contacts_{kind}", ["source"], F), f"{{{{source}}}} {kind}")
                    for kind in ("handled", "offered", "answered", "abandoned")
                )
            ),
            unit="short",
            width=16,
        ),
        g.timeseries(
            "Abandon rate",
            "Contacts abandoned / contacts offered in the selected window, per source.",
            g.targets(
                (
                    f"{summed('aht_contacts_abandoned', ['source'], F)}\n"
                    f"  / ({summed('aht_contacts_offered', ['source'], F)} > 0)",
                    "{{source}}",
                )
            ),
            unit="percentunit",
            width=8,
        ),
        g.row("Agents"),
        g.bargauge(
            f"Highest AHT: top {AGENT_TOP} agents",
            "Agents with the longest handle time per contact over the selected window (sources grouped by "
            "agent), among agents with at least $min_contacts contacts handled. Names from aht_agent_info; "
            "two agents may share a name, so the id follows it.",
            g.targets((_agents_ranked("topk"), "{{agent_name}} {{agent}} ({{source}})"), instant=True),
            unit="s",
        ),
        g.bargauge(
            f"Lowest AHT: bottom {AGENT_TOP} agents",
            "Agents with the shortest handle time per contact over the selected window, among agents with "
            "at least $min_contacts contacts handled. Very short times can mean contacts closed without work.",
            g.targets((_agents_ranked("bottomk"), "{{agent_name}} {{agent}} ({{source}})"), instant=True),
            unit="s",
        ),
        g.row("Provider-reported averages (sources without sums, e.g. Ozonetel)"),
        g.bargauge(
            "Provider-reported AHT by queue",
            "Sources whose provider reports only a ready-made average (Ozonetel: outbound calls over the "
            "last 2 hours, per campaign) export aht_seconds without sums or counts. Shown as reported: such "
            "averages cannot be combined. Ignores the window picker (the provider fixes the window).",
            g.targets((_provider_averages("queue"), "{{queue_name}} {{queue}} ({{source}}, {{window}})"), instant=True),
            unit="s",
        ),
        g.bargauge(
            "Provider-reported AHT by agent",
            "As reported by providers without sums (Ozonetel: per agent, outbound calls over the last 2 "
            "hours). Ignores the window picker.",
            g.targets((_provider_averages("agent"), "{{agent_name}} {{agent}} ({{source}}, {{window}})"), instant=True),
            unit="s",
        ),
        g.timeseries(
            "Provider-reported AHT over time",
            "aht_seconds of the sources without sums, per queue or agent, over the dashboard's time range.",
            g.targets(
                (
                    averages_only(F_ANY_WINDOW),
                    "{{source}} {{window}} {{queue}}{{agent}}",
                )
            ),
            unit="s",
            width=24,
        ),
    ]


def overview() -> dict[str, Any]:
    q = 'source=~"$source", provider=~"$provider"'
    variables = [
        g.datasource_variable(),
        g.query_variable("provider", "Provider", "label_values(aht_exporter_source_up, provider)"),
        g.query_variable("source", "Source", 'label_values(aht_exporter_source_up{provider=~"$provider"}, source)'),
        g.query_variable("window", "Window", f"label_values(aht_seconds{{{q}}}, window)", multi=False, default="1h"),
        g.query_variable("media_type", "Media type", f'label_values(aht_seconds{{{q}, window="$window"}}, media_type)'),
        g.query_variable(
            "queue",
            "Queue id",
            f'label_values(aht_seconds{{{q}, window="$window", media_type=~"$media_type"}}, queue)',
        ),
        g.textbox_variable(
            "min_contacts",
            "Min contacts (agent ranking)",
            "3",
            "Agents with fewer contacts handled in the window are left out of the agent rankings.",
        ),
        g.query_result_variable(
            "lag",
            "Counter lag (s)",
            # One line: Grafana recognises query_result(...) only when it is on one line.
            f'count_values("lag", {source_lag(SOURCE)})'.replace("\n", " "),
            r'/lag="(\d+)"/',
            "The distinct aht_exporter_totals_lag_seconds of the sources picked, near the range's end: the "
            "exact-range row repeats once per value (docs/exact-ranges.md).",
        ),
    ]
    return g.dashboard(
        DASHBOARD_OVERVIEW,
        "AHT overview",
        "Average handle time from aht-exporter: always sum(handle time) / sum(contacts handled), never an "
        "average of averages. See docs/dashboards.md.",
        variables,
        overview_panels(),
        time_from="now-6h",
    )


# --- Exporter health -------------------------------------------------------------------------------

H = ['job=~"$job"', 'provider=~"$provider"', 'source=~"$source"']


def _increase(metric: str, labels: list[str], rng: str, matchers: list[str] = H) -> str:
    return f"sum by ({', '.join(labels)}) (increase({selector(metric, matchers)}[{rng}]))"


def health_panels() -> list[g.Panel]:
    requests = "aht_exporter_api_requests_total"
    all_requests = _increase(requests, ["source"], "1h")
    failed = _increase(requests, ["source"], "1h", [*H, 'status!~"2.."'])
    # `or ... * 0`: a source whose every request succeeded has no non-2xx series; show it as 0, not as nothing.
    not_2xx = f"(\n  {failed}\n  or {all_requests} * 0\n)\n/ ({all_requests} > 0)"
    duration = "aht_exporter_poll_duration_seconds"
    # Not filtered by source: the sources of one Ozonetel account share its token budget.
    ozonetel_tokens = selector("aht_exporter_tokens_issued_total", [H[0], 'provider="ozonetel"'])

    def quantile(q: str) -> str:
        return f"histogram_quantile({q}, sum by (source, le) (rate({selector(f'{duration}_bucket', H)}[1h])))"

    return [
        g.row("Exporter"),
        g.stat(
            "Targets up",
            "Prometheus' `up` for each exporter target: DOWN means scrapes fail (AhtExporterDown).",
            g.targets(('up{job=~"$job"}', "{{instance}}")),
            unit="none",
            steps=((None, "red"), (1, "green")),
            mappings=g.up_down_mappings(),
        ),
        g.table(
            "Exporter version",
            "aht_exporter_build_info per target.",
            g.targets(('aht_exporter_build_info{job=~"$job"}', ""), instant=True, table=True),
            columns={},
            hide=("__name__", "Value"),
            order=("job", "instance", "version"),
            width=8,
            height=5,
        ),
        g.stat(
            "Sources up",
            "Sources whose last poll succeeded, of all sources.",
            g.targets(
                (f"sum({selector('aht_exporter_source_up', H)})", "up"),
                (f"count({selector('aht_exporter_source_up', H)})", "sources"),
            ),
            unit="short",
        ),
        g.row("Sources"),
        g.state_timeline(
            "Source up",
            "aht_exporter_source_up: whether each source's last poll succeeded (AhtExporterSourceDown after "
            "10 minutes DOWN).",
            g.targets((f"max by (source) ({selector('aht_exporter_source_up', H)})", "{{source}}")),
            mappings=g.up_down_mappings(),
        ),
        g.timeseries(
            "Data age",
            "time() - aht_exporter_data_end_timestamp_seconds: age of the newest closed bucket. A saw tooth "
            "between the delay and one bucket plus the delay is healthy. Dashed: the AhtExporterDataStale "
            "threshold (needs the recording rules of deploy/prometheus).",
            g.targets(
                (
                    f"time() - max by (source) ({selector('aht_exporter_data_end_timestamp_seconds', H)})",
                    "{{source}}",
                ),
                (
                    "max by (source) (\n  " + selector("aht_exporter:data_age_threshold_seconds", H[1:]) + "\n)",
                    "{{source}} alert threshold",
                ),
            ),
            unit="s",
            overrides=[g.dashed(".* alert threshold")],
        ),
        g.timeseries(
            "Time since last successful poll",
            "time() - aht_exporter_last_success_timestamp_seconds. Grows past the poll cadence (5m by "
            "default) only while polls fail.",
            g.targets(
                (
                    f"time() - max by (source) ({selector('aht_exporter_last_success_timestamp_seconds', H)})",
                    "{{source}}",
                )
            ),
            unit="s",
        ),
        g.timeseries(
            "Polls in the last 15 minutes, by result",
            "increase(aht_exporter_polls_total[15m]) per source and result; three per 15 minutes at the "
            "default cadence.",
            g.targets((_increase("aht_exporter_polls_total", ["source", "result"], "15m"), "{{source}} {{result}}")),
            unit="short",
        ),
        g.timeseries(
            "Poll duration",
            "Wall time of a poll over the last hour: median and 95th percentile from the histogram "
            "aht_exporter_poll_duration_seconds, and the mean. A poll must finish within its cadence less 10 s.",
            g.targets(
                (quantile("0.5"), "{{source}} p50"),
                (quantile("0.95"), "{{source}} p95"),
                (
                    f"sum by (source) (rate({selector(f'{duration}_sum', H)}[1h]))\n"
                    f"  / (sum by (source) (rate({selector(f'{duration}_count', H)}[1h])) > 0)",
                    "{{source}} mean",
                ),
            ),
            unit="s",
        ),
        g.row("Provider API"),
        g.timeseries(
            "API requests in the last 15 minutes, by status",
            "HTTP requests to the provider per source and status code (`error`: no response), including "
            "retries and token requests.",
            g.targets((_increase(requests, ["source", "status"], "15m"), "{{source}} {{status}}")),
            unit="short",
            stacked=True,
            bars=True,
        ),
        g.timeseries(
            "API responses other than 2xx",
            "Share of the last hour's provider requests that did not answer 2xx, per source (0 when all did).",
            g.targets((not_2xx, "{{source}}")),
            unit="percentunit",
        ),
        g.timeseries(
            "Rate-limited responses",
            "Responses in the last 15 minutes that said slow down (429 or the provider's own form). "
            "AhtExporterRateLimited fires when some came in every 45 minutes, for an hour.",
            g.targets((_increase("aht_exporter_rate_limited_total", ["source"], "15m"), "{{source}}")),
            unit="short",
        ),
        g.timeseries(
            "Series dropped by max_series",
            "Data series dropped in the last hour because a source has more label sets than its max_series "
            "(AhtExporterSeriesDropped). Any value above 0 means that source's sums are incomplete.",
            g.targets((_increase("aht_exporter_series_dropped_total", ["source"], "1h"), "{{source}}")),
            unit="short",
        ),
        g.timeseries(
            "API budget left",
            "Share of the provider's rate-limit window its last reply on each endpoint left, per source and "
            "endpoint: aht_exporter_api_quota_remaining / aht_exporter_api_quota_limit, where the provider says "
            "(Genesys, in its inin-ratelimit-* headers). The budget is the OAuth client's, shared with whatever "
            f"else uses it (dashed: AhtExporterApiBudgetLow fires below {API_BUDGET_LOW:.0%} while requests continue).",
            g.targets(
                (
                    f"{selector('aht_exporter_api_quota_remaining', H)}\n"
                    "  / on (job, instance, source, provider, endpoint) "
                    f"({selector('aht_exporter_api_quota_limit', H)} > 0)",
                    "{{source}} {{endpoint}}",
                )
            ),
            unit="percentunit",
            width=24,
            threshold_line=API_BUDGET_LOW,
        ),
        g.timeseries(
            "Tokens issued in the last hour",
            "Access tokens the providers' token endpoints issued in the last hour. Per exporter, all its Ozonetel "
            "sources together, whatever the Source picker says: sources of one Ozonetel account share one token, "
            f"and Ozonetel issues {OZONETEL_TOKENS_PER_HOUR} an hour per account (dashed: AhtExporterTokenBudget "
            f"fires at {TOKEN_BUDGET_WARN}). Per source, every provider: a source that keeps getting new tokens "
            "has them refused or expiring early.",
            g.targets(
                (
                    f"sum without (source) (\n  increase({ozonetel_tokens}[1h])\n)",
                    "{{instance}}: Ozonetel, all sources",
                ),
                (_increase("aht_exporter_tokens_issued_total", ["source"], "1h"), "{{source}}"),
            ),
            unit="short",
            width=24,
            threshold_line=TOKEN_BUDGET_WARN,
        ),
        g.row("Scrape"),
        g.timeseries(
            "Data series per source",
            "Series with a window label per source, to compare with max_series (20000 by default).",
            g.targets((f'count by (source) ({{__name__=~"aht_.+", window!="", {", ".join(H)}}})', "{{source}}")),
            unit="short",
            width=8,
        ),
        g.timeseries(
            "Scrape duration",
            "How long Prometheus takes to scrape the exporter. Scrapes serve bytes rendered at the last poll, so "
            "this stays flat as series grow.",
            g.targets(('scrape_duration_seconds{job=~"$job"}', "{{instance}}")),
            unit="s",
            width=8,
        ),
        g.timeseries(
            "Samples per scrape",
            "scrape_samples_scraped per target.",
            g.targets(('scrape_samples_scraped{job=~"$job"}', "{{instance}}")),
            unit="short",
            width=8,
        ),
    ]


def health() -> dict[str, Any]:
    variables = [
        g.datasource_variable(),
        g.query_variable("job", "Job", "label_values(aht_exporter_build_info, job)", all_value=None),
        g.query_variable("provider", "Provider", 'label_values(aht_exporter_source_up{job=~"$job"}, provider)'),
        g.query_variable(
            "source", "Source", 'label_values(aht_exporter_source_up{job=~"$job", provider=~"$provider"}, source)'
        ),
    ]
    return g.dashboard(
        DASHBOARD_HEALTH,
        "AHT exporter health",
        "Whether aht-exporter's figures can be trusted: targets, per-source polls, data age, provider API "
        "responses and rate limiting. See docs/dashboards.md and docs/alerts.md.",
        variables,
        health_panels(),
        time_from="now-6h",
    )


def panel_ids(*dashboards: dict[str, Any]) -> dict[tuple[str, str], int]:
    """(dashboard uid, panel title) -> panel id, for alert rules that link to their panel."""
    return {(d["uid"], p["title"]): p["id"] for d in dashboards for p in d["panels"]}
