"""Every PromQL expression the shipped artefacts run, read back from the committed files.

Used by the tests: the end-to-end test evaluates each against a real Prometheus scraping the demo,
the unit tests check them statically. Grafana template variables are replaced the way a user opening
the dashboard with its defaults gets them: All is the variable's `allValue` (`.*`), a single-value
variable its default, a textbox its text; Grafana's own interval variables get plausible values, and
`$__from`/`$__to` the dashboard's default time range ending now (or the range a caller gives).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_FILES = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
PROMETHEUS_RULE_FILES = sorted((ROOT / "deploy" / "prometheus").glob("*.rules.yml"))
GRAFANA_ALERTS_FILE = ROOT / "grafana" / "provisioning" / "alerting" / "aht-exporter-alerts.yaml"

BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

TIME_RANGE = ("__from", "__to")
"""Grafana's time-range variables: `${__from}` is Unix milliseconds, `${__from:date:seconds}` Unix seconds."""

GLOBAL_VARIABLES = frozenset({*BUILTINS, *TIME_RANGE})

# $name, ${name}, ${name:format}, ${name:format:argument}, [[name]]
_VARIABLE = re.compile(r"\$\{(\w+)((?::[^:}]+)*)\}|\[\[(\w+)\]\]|\$(\w+)")
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$", re.S)
# Grafana's own pattern (public/app/plugins/datasource/prometheus): one line only.
_QUERY_RESULT = re.compile(r"^query_result\((?P<expr>.+)\)\s*$")
_RELATIVE_FROM = re.compile(r"^now-(?P<n>\d+)(?P<unit>[smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Query:
    id: str
    expr: str  # as shipped: Grafana variables not yet substituted
    kind: str  # panel | variable | record | alert | grafana-alert
    title: str = ""  # the panel's title, for panel queries
    board: str = ""  # the dashboard's uid, for panel and variable queries

    def promql(self, resolve: Callable[[str], list[str]] | None = None, overrides: dict[str, str] | None = None) -> str:
        """The PromQL to run: variables substituted (`overrides` first: a repeated panel's own value, a time
        range), `label_values(...)` and `query_result(...)` turned into a query."""
        if not self.board:
            return self.expr
        values = {**variable_values(dashboard(self.board), resolve), **(overrides or {})}
        expr = variable_query(self.expr) if self.kind == "variable" else self.expr
        return substitute(expr, values)

    @property
    def variables(self) -> set[str]:
        """The names of the variables the expression uses."""
        return {m.group(1) or m.group(3) or m.group(4) for m in _VARIABLE.finditer(self.expr)}

    @property
    def must_return_series(self) -> bool:
        """An alert's expression returns nothing on a healthy system: that one must only evaluate."""
        return self.kind != "alert"


def load_dashboards() -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in DASHBOARD_FILES]


def dashboard(uid: str) -> dict[str, Any]:
    return next(b for b in load_dashboards() if b["uid"] == uid)


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in board["panels"]:
        yield p
        yield from p.get("panels", [])  # inside collapsed rows


def time_range_values(start: int, end: int) -> dict[str, str]:
    """What Grafana puts for `${__from}`, `${__to}` and their `:date:seconds` forms, for a range in Unix seconds."""
    out: dict[str, str] = {}
    for name, t in zip(TIME_RANGE, (start, end), strict=True):
        out[name] = str(t * 1000)
        out[f"{name}:date:seconds"] = str(t)
    return out


def default_time_range(board: dict[str, Any], now: int) -> tuple[int, int]:
    """The dashboard's default time range (`now-6h` to `now`) at `now`."""
    m = _RELATIVE_FROM.match(board["time"]["from"])
    if not m or board["time"]["to"] != "now":
        raise ValueError(f"not a now-N to now time range: {board['time']}")
    return now - int(m["n"]) * _SECONDS[m["unit"]], now


def variable_values(
    board: dict[str, Any],
    resolve: Callable[[str], list[str]] | None = None,
    *,
    time_range: tuple[int, int] | None = None,
) -> dict[str, str]:
    """name -> what Grafana puts in a query for the dashboard's defaults.

    `resolve(definition)` lists what a `label_values` or `query_result` variable's query returns (for
    query_result, in Grafana's text form: `query_result_text`), for All without an `allValue`; the
    variable's regex then picks the values. Without `resolve`, such a variable becomes `.+`.
    `time_range` (Unix seconds) defaults to the dashboard's default range, ending now.
    """
    values = dict(BUILTINS)
    values |= time_range_values(*(time_range or default_time_range(board, int(time.time()))))
    for v in board["templating"]["list"]:
        if v["type"] == "datasource":
            continue
        if v["type"] == "textbox":
            values[v["name"]] = v["query"]
        elif v.get("includeAll"):
            if v.get("allValue"):
                values[v["name"]] = v["allValue"]
            else:
                found = (
                    variable_regex(v.get("regex", ""), resolve(substitute(v["definition"], values))) if resolve else []
                )
                values[v["name"]] = "(" + "|".join(regex_escape(x) for x in found) + ")" if found else ".+"
        else:
            values[v["name"]] = v["current"]["value"]
    return values


def regex_escape(value: str) -> str:
    """A value as a regex inside a PromQL string, escaped as Grafana does (a doubled backslash)."""
    return "".join("\\\\" + c if c in "\\^$.|?*+()[]{}" else c for c in value)


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace each variable by its value; `${name:format}` by the value of `name:format` where there is one
    (`${__to:date:seconds}`), else by that of `name`."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3) or m.group(4)
        formatted = f"{name}{m.group(2) or ''}"
        if formatted in values:
            return values[formatted]
        if name not in values:
            raise KeyError(f"undefined variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(one, expr)


def variable_query(definition: str) -> str:
    """`label_values(sel, label)` as PromQL returning one series per value; `query_result(expr)` as expr."""
    if m := _QUERY_RESULT.match(definition.strip()):
        return m["expr"]
    m = _LABEL_VALUES.match(definition.strip())
    if not m:
        raise ValueError(f"not a label_values(selector, label) or query_result(expr) query: {definition!r}")
    return f"group by ({m['label']}) ({m['selector']})"


def is_query_result(definition: str) -> bool:
    return bool(_QUERY_RESULT.match(definition.strip()))


def query_result_text(item: dict[str, Any]) -> str:
    """One series of an instant query's result as Grafana lists it for a `query_result` variable:
    `name{label="value",...} value timestamp_ms` (its metric_find_query.ts)."""
    labels = {k: v for k, v in item["metric"].items() if k != "__name__"}
    text = item["metric"].get("__name__", "") + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    return f"{text} {item['value'][1]} {round(float(item['value'][0]) * 1000)}"


def variable_regex(regex: str, options: list[str]) -> list[str]:
    """A variable's options through its regex, as Grafana applies it: `/pattern/`; an option that does not
    match is dropped; with a capture group, the option becomes the group; duplicates go."""
    if not regex:
        return options
    pattern = re.compile(regex[1 : regex.rindex("/")])
    out: list[str] = []
    for option in options:
        m = pattern.search(option)
        if m is None:
            continue
        value = m.group(1) if pattern.groups else option
        if value not in out:
            out.append(value)
    return out


def dashboard_queries() -> list[Query]:
    out = []
    for board in load_dashboards():
        uid = board["uid"]
        for v in board["templating"]["list"]:
            if v["type"] == "query":
                out.append(Query(f"{uid}/variable/{v['name']}", v["definition"], "variable", board=uid))
        for p in panels(board):
            for t in p.get("targets", []):
                out.append(Query(f"{uid}/{p['title']}/{t['refId']}", t["expr"], "panel", p["title"], uid))
    return out


def rule_queries() -> list[Query]:
    out = []
    for path in PROMETHEUS_RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for i, rule in enumerate(group["rules"]):
                if "record" in rule:
                    out.append(Query(f"{path.name}/{rule['record']}#{i}", rule["expr"], "record"))
                else:
                    out.append(Query(f"{path.name}/{rule['alert']}", rule["expr"], "alert"))
    return out


def grafana_alert_queries() -> list[Query]:
    provisioning = yaml.safe_load(GRAFANA_ALERTS_FILE.read_text(encoding="utf-8"))
    out = []
    for group in provisioning["groups"]:
        for rule in group["rules"]:
            for data in rule["data"]:
                if data["datasourceUid"] != "__expr__":
                    out.append(
                        Query(f"grafana/{rule['title']}/{data['refId']}", data["model"]["expr"], "grafana-alert")
                    )
    return out
