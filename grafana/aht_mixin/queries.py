"""Every PromQL expression the shipped artefacts run, read back from the committed files.

Used by the tests: the end-to-end test evaluates each against a real Prometheus scraping the demo,
the unit tests check them statically. Grafana template variables are replaced the way a user opening
the dashboard with its defaults gets them: All is the variable's `allValue` (`.*`), a single-value
variable its default, a textbox its text; Grafana's own interval variables get plausible values.
"""

from __future__ import annotations

import json
import re
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

# $name, ${name}, ${name:format}, [[name]]
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$", re.S)


@dataclass(frozen=True)
class Query:
    id: str
    expr: str  # as shipped: Grafana variables not yet substituted
    kind: str  # panel | variable | record | alert | grafana-alert
    title: str = ""  # the panel's title, for panel queries
    board: str = ""  # the dashboard's uid, for panel and variable queries

    def promql(self, resolve: Callable[[str], list[str]] | None = None) -> str:
        """The PromQL to run: variables substituted, `label_values(...)` turned into a query."""
        if not self.board:
            return self.expr
        values = variable_values(dashboard(self.board), resolve)
        expr = variable_query(self.expr) if self.kind == "variable" else self.expr
        return substitute(expr, values)

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


def variable_values(board: dict[str, Any], resolve: Callable[[str], list[str]] | None = None) -> dict[str, str]:
    """name -> what Grafana puts in a query for the dashboard's defaults.

    `resolve(label_values query)` lists a variable's values for All without an `allValue`; without it,
    such a variable becomes `.+`.
    """
    values = dict(BUILTINS)
    for v in board["templating"]["list"]:
        if v["type"] == "datasource":
            continue
        if v["type"] == "textbox":
            values[v["name"]] = v["query"]
        elif v.get("includeAll"):
            if v.get("allValue"):
                values[v["name"]] = v["allValue"]
            else:
                found = resolve(substitute(v["definition"], values)) if resolve else []
                values[v["name"]] = "(" + "|".join(regex_escape(x) for x in found) + ")" if found else ".+"
        else:
            values[v["name"]] = v["current"]["value"]
    return values


def regex_escape(value: str) -> str:
    """A value as a regex inside a PromQL string, escaped as Grafana does (a doubled backslash)."""
    return "".join("\\\\" + c if c in "\\^$.|?*+()[]{}" else c for c in value)


def substitute(expr: str, values: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(f"undefined variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(one, expr)


def variable_query(definition: str) -> str:
    """`label_values(sel, label)` as PromQL returning one series per value."""
    m = _LABEL_VALUES.match(definition.strip())
    if not m:
        raise ValueError(f"not a label_values(selector, label) query: {definition!r}")
    return f"group by ({m['label']}) ({m['selector']})"


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
