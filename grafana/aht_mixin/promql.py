"""PromQL building blocks shared by the dashboards and the rules.

Two rules hold everywhere:

- AHT over anything but one exporter series is `sum(handle time) / sum(contacts handled)`, never an
  average of `aht_seconds`: averages of averages weigh a queue with 2 contacts like one with 2,000.
- `source` is kept in every aggregation of data series. A source exports at exactly one grain, so sums
  within a source are right; two sources may see the same contacts (the demo's two sources poll one
  tenant grouped two ways), so sums across sources could count a contact twice.
"""

from __future__ import annotations

from collections.abc import Sequence

JOB = "aht-exporter"
"""The scrape job of the exporter: the compose and e2e Prometheus name it so, and the ServiceMonitor in
deploy/kubernetes takes it from the Service's `app.kubernetes.io/name` label."""

SERIES_KEY = ("source", "provider", "window")
"""Labels every data series carries; recording rules always keep them."""


def selector(metric: str, matchers: Sequence[str] = ()) -> str:
    return f"{metric}{{{', '.join(matchers)}}}" if matchers else metric


def by(labels: Sequence[str]) -> str:
    return f" by ({', '.join(labels)})" if labels else ""


def summed(metric: str, labels: Sequence[str], matchers: Sequence[str] = ()) -> str:
    return f"sum{by(labels)} ({selector(metric, matchers)})"


def ratio(
    numerator: str,
    denominator: str,
    labels: Sequence[str],
    matchers: Sequence[str] = (),
    *,
    min_denominator: str = "0",
) -> str:
    """sum(numerator) / sum(denominator), absent (not NaN, not Inf) where the denominator is too small."""
    op = ">" if min_denominator == "0" else ">="
    return (
        f"{summed(numerator, labels, matchers)}\n  / ({summed(denominator, labels, matchers)} {op} {min_denominator})"
    )


def aht(labels: Sequence[str], matchers: Sequence[str] = (), *, min_contacts: str = "0") -> str:
    return ratio("aht_handle_time_seconds", "aht_contacts_handled", labels, matchers, min_denominator=min_contacts)


def grouped_by(expr: str, *labels: str) -> str:
    """`expr` for the sources grouped by one of `labels` only. A source grouped by agent alone has no
    queue label, and would show up in a by-queue chart as one nameless queue holding all its contacts;
    a source grouped by queue keeps its empty-queue series (contacts outside any queue)."""
    having = " or ".join(f'group by (source) (aht_contacts_handled{{{label}!=""}})' for label in labels)
    return f"{expr}\nand on (source) ({having})"


def with_name(expr: str, kind: str, matchers: Sequence[str] = ()) -> str:
    """Add the display name from `aht_<kind>_info` as a label, keeping series that have no name (a left join).

    `* on (source, <kind>) group_left (<kind>_name)` alone would drop every series whose name is unknown
    (contacts outside any queue, a failed name lookup); `or on (...) <expr>` brings those back.
    """
    on = f"on (source, {kind})"
    info = selector(f"aht_{kind}_info", matchers)
    return f"(\n{indent(expr)}\n)\n* {on} group_left ({kind}_name) {info}\nor {on} (\n{indent(expr)}\n)"


def averages_only(matchers: Sequence[str]) -> str:
    """`aht_seconds` of sources that export no sums: providers that only report a ready-made average
    (Ozonetel: the last 2 hours). Those averages are shown as the provider gives them, never combined."""
    return f"{selector('aht_seconds', matchers)}\nunless on (source) aht_contacts_handled"


def indent(expr: str, by_spaces: int = 2) -> str:
    pad = " " * by_spaces
    return "\n".join(pad + line if line else line for line in expr.splitlines())


_OPERATORS = ["+", "-", "*", "/", "%", "^", ">", "<", ">=", "<=", "==", "!=", "and", "or", "unless"]
_BINARY = tuple(f" {op} " for op in _OPERATORS)


def top_level(expr: str) -> str:
    """`expr` with everything inside brackets and strings removed: what a binary operator would bind."""
    out, depth, quote = [], 0, ""
    for c in expr:
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            out.append(c)
    return " ".join("".join(out).split())


def parenthesized(expr: str) -> str:
    """`expr`, in parentheses if it has a binary operator of its own (so `(a - b) > 0`, `rate(x[5m]) > 0`)."""
    flat = f" {top_level(expr)} "
    return f"(\n{indent(expr)}\n)" if any(op in flat for op in _BINARY) else expr


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


# --- Exact ranges (docs/exact-ranges.md) ------------------------------------------------------------

RANGE_START = "${__from:date:seconds}"
RANGE_END = "${__to:date:seconds}"
"""The dashboard's time range as Unix seconds, Grafana's `${__from:date:seconds}` format (Grafana 7.1.2+)."""

LAG = "${lag}"
"""The dashboard variable holding the `aht_exporter_totals_lag_seconds` of the sources a panel shows."""

LAG_LOOKAHEAD = "35d"
"""How far after the range's end a source's lag is looked for when its gauge is missing there: a range
backfilled from before the exporter ran has counters but no lag gauge yet. As long as the exporter keeps a
label set's counters."""


def exact_increase(
    metric: str,
    labels: Sequence[str],
    matchers: Sequence[str] = (),
    *,
    start: str = RANGE_START,
    end: str = RANGE_END,
    lag: str = LAG,
) -> str:
    """The growth of a `_total` counter over exactly the buckets in [start, end), as docs/exact-ranges.md
    writes it: its value `lag` after `end` less its value `lag` after `start`. `or ... * 0` keeps a label set
    that first appeared inside the range (it had no counter at `start`). Both instants are Unix seconds (or
    the Grafana variables that become them); `lag` is in seconds, without the unit."""
    at_end = f"sum{by(labels)} ({selector(metric, matchers)} @ {end} offset -{lag}s)"
    at_start = f"sum{by(labels)} ({selector(metric, matchers)} @ {start} offset -{lag}s)"
    return f"  {at_end}\n- (\n    {at_start}\n  or\n    {at_end} * 0\n  )"


def exact_aht(labels: Sequence[str], matchers: Sequence[str] = (), **at: str) -> str:
    """Handle time / contacts handled over exactly [start, end) (`exact_increase`), absent (not NaN) where no
    contact was handled in the range."""
    handle = exact_increase("aht_handle_time_seconds_total", labels, matchers, **at)
    handled = exact_increase("aht_contacts_handled_total", labels, matchers, **at)
    return f"(\n{indent(handle)}\n)\n/ (\n  (\n{indent(handled, 4)}\n  ) > 0\n)"


def source_lag(matchers: Sequence[str] = ()) -> str:
    """Each source's `aht_exporter_totals_lag_seconds` at the evaluation time (a dashboard's instant queries
    run at the range's end), or, where the source had none then, the latest within LAG_LOOKAHEAD after it."""
    gauge = selector("aht_exporter_totals_lag_seconds", matchers)
    return f"{gauge}\nor last_over_time({gauge}[{LAG_LOOKAHEAD}] offset -{LAG_LOOKAHEAD})"
