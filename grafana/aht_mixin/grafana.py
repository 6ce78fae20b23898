"""Grafana dashboard JSON building blocks (schema of Grafana 11: `schemaVersion` 39).

Small functions over plain dicts; `layout` places panels left to right, top to bottom, on the
24-column grid, and numbers them in that order, so ids and positions follow from the source's order.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 39  # Grafana 11.0; later versions migrate it on load
DS = {"type": "prometheus", "uid": "${datasource}"}

Panel = dict[str, Any]


def target(expr: str, legend: str = "__auto", ref: str = "A", *, instant: bool = False, table: bool = False) -> Panel:
    t: Panel = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "instant": instant,
        "legendFormat": legend,
        "range": not instant,
        "refId": ref,
    }
    if table:
        t["format"] = "table"
    return t


def targets(*queries: tuple[str, str], instant: bool = False, table: bool = False) -> list[Panel]:
    """(expr, legend) pairs, lettered A, B, C..."""
    return [
        target(expr, legend, chr(ord("A") + i), instant=instant, table=table)
        for i, (expr, legend) in enumerate(queries)
    ]


def _panel(kind: str, title: str, description: str, tgts: list[Panel], width: int, height: int) -> Panel:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"h": height, "w": width, "x": 0, "y": 0},
        "targets": tgts,
    }


def _thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for value, color in steps]}


GREEN = ((None, "green"),)


def timeseries(
    title: str,
    description: str,
    tgts: list[Panel],
    *,
    unit: str,
    width: int = 12,
    height: int = 8,
    stacked: bool = False,
    bars: bool = False,
    overrides: list[dict[str, Any]] | None = None,
    min_zero: bool = True,
    threshold_line: float | None = None,
) -> Panel:
    """`threshold_line`: a dashed red line at that value (an alert's threshold that is a number, not a series)."""
    p = _panel("timeseries", title, description, tgts, width, height)
    custom: dict[str, Any] = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 70 if bars else (35 if stacked else 10),
        "gradientMode": "none",
        "showPoints": "never",
        "spanNulls": False,
        "lineInterpolation": "stepAfter",  # the series change at polls: steps, not slopes
        "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
        "axisPlacement": "auto",
    }
    if min_zero:
        custom["axisSoftMin"] = 0
    steps: tuple[tuple[float | None, str], ...] = GREEN
    if threshold_line is not None:
        custom["thresholdsStyle"] = {"mode": "dashed"}
        steps = (*GREEN, (threshold_line, "red"))
    p["fieldConfig"] = {
        "defaults": {
            "unit": unit,
            "color": {"mode": "palette-classic"},
            "custom": custom,
            "thresholds": _thresholds(*steps),
        },
        "overrides": overrides or [],
    }
    p["options"] = {
        "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True, "calcs": ["lastNotNull", "max"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return p


def stat(
    title: str,
    description: str,
    tgts: list[Panel],
    *,
    unit: str,
    width: int = 8,
    height: int = 5,
    steps: tuple[tuple[float | None, str], ...] = GREEN,
    mappings: list[dict[str, Any]] | None = None,
) -> Panel:
    p = _panel("stat", title, description, tgts, width, height)
    p["fieldConfig"] = {
        "defaults": {
            "unit": unit,
            "color": {"mode": "thresholds"},
            "thresholds": _thresholds(*steps),
            "mappings": mappings or [],
        },
        "overrides": [],
    }
    p["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": "auto",
        "wideLayout": True,
        "showPercentChange": False,
    }
    return p


def bargauge(
    title: str,
    description: str,
    tgts: list[Panel],
    *,
    unit: str,
    width: int = 12,
    height: int = 10,
    no_value: str | None = None,
) -> Panel:
    """`no_value`: the text shown instead of Grafana's bare "No data" when the queries return nothing."""
    p = _panel("bargauge", title, description, tgts, width, height)
    p["fieldConfig"] = {
        "defaults": {
            "unit": unit,
            "min": 0,
            "color": {"mode": "continuous-GrYlRd"},
            "thresholds": _thresholds(*GREEN),
        },
        "overrides": [],
    }
    if no_value is not None:
        p["fieldConfig"]["defaults"]["noValue"] = no_value
    p["options"] = {
        "displayMode": "gradient",
        "orientation": "horizontal",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showUnfilled": True,
        "valueMode": "color",
        "namePlacement": "auto",
        "sizing": "auto",
        "minVizHeight": 16,
        "minVizWidth": 8,
        "maxVizHeight": 300,
    }
    return p


def table(
    title: str,
    description: str,
    tgts: list[Panel],
    *,
    columns: dict[str, tuple[str, str]],
    hide: tuple[str, ...],
    order: tuple[str, ...],
    width: int = 24,
    height: int = 10,
) -> Panel:
    """An instant table merging several queries into one row per label set.

    `columns` maps a value column ("Value #A") to (header, unit); `hide` lists label columns to drop.
    """
    p = _panel("table", title, description, tgts, width, height)
    p["fieldConfig"] = {
        "defaults": {"custom": {"align": "auto", "filterable": True}, "thresholds": _thresholds(*GREEN)},
        "overrides": [
            {"matcher": {"id": "byName", "options": header}, "properties": [{"id": "unit", "value": unit}]}
            for header, unit in columns.values()
        ],
    }
    p["options"] = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}}
    renames = {col: header for col, (header, _) in columns.items()}
    p["transformations"] = [
        {"id": "merge", "options": {}},
        {
            "id": "organize",
            "options": {
                "excludeByName": {name: True for name in ("Time", *hide)},
                "indexByName": {name: i for i, name in enumerate(order)},
                "renameByName": renames,
            },
        },
    ]
    return p


def state_timeline(
    title: str, description: str, tgts: list[Panel], *, mappings: list[dict[str, Any]], width: int = 24, height: int = 6
) -> Panel:
    p = _panel("state-timeline", title, description, tgts, width, height)
    p["fieldConfig"] = {
        "defaults": {
            "unit": "none",
            "color": {"mode": "thresholds"},
            "thresholds": _thresholds(*GREEN),
            "mappings": mappings,
            "custom": {"fillOpacity": 80, "lineWidth": 0},
        },
        "overrides": [],
    }
    p["options"] = {
        "mergeValues": True,
        "showValue": "auto",
        "alignValue": "left",
        "rowHeight": 0.9,
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return p


def up_down_mappings() -> list[dict[str, Any]]:
    return [
        {
            "type": "value",
            "options": {
                "0": {"text": "DOWN", "color": "red", "index": 0},
                "1": {"text": "UP", "color": "green", "index": 1},
            },
        }
    ]


def row(title: str, *, repeat: str | None = None) -> Panel:
    """A row; with `repeat`, Grafana repeats it, and the panels under it, once per value of that variable."""
    r: Panel = {
        "type": "row",
        "title": title,
        "collapsed": False,
        "panels": [],
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0},
    }
    if repeat is not None:
        r["repeat"] = repeat
    return r


def dashed(name_regex: str) -> dict[str, Any]:
    """An override drawing matching series as dashed lines outside the stack (reference lines)."""
    return {
        "matcher": {"id": "byRegexp", "options": name_regex},
        "properties": [
            {"id": "custom.stacking", "value": {"mode": "none", "group": "A"}},
            {"id": "custom.fillOpacity", "value": 0},
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "custom.lineWidth", "value": 2},
        ],
    }


def layout(panels: list[Panel]) -> list[Panel]:
    """Assign ids and grid positions in order: a row starts a new line; panels wrap at 24 columns."""
    x = y = line_height = 0
    out = []
    for i, p in enumerate(panels, start=1):
        p = {"id": i, **p}
        pos = p["gridPos"]
        if p["type"] == "row" or x + pos["w"] > 24:
            x, y, line_height = 0, y + line_height, 0
        pos["x"], pos["y"] = x, y
        if p["type"] == "row":
            y, line_height = y + 1, 0
        else:
            x += pos["w"]
            line_height = max(line_height, pos["h"])
        out.append(p)
    return out


def datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
    }


def query_variable(
    name: str,
    label: str,
    query: str,
    *,
    multi: bool = True,
    all_value: str | None = ".*",
    default: str | None = None,
) -> dict[str, Any]:
    """A `label_values(...)` variable. Multi-value ones offer All, which is `.*` unless `all_value` is None
    (then Grafana sends every value as a regex alternation)."""
    v: dict[str, Any] = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": "StandardVariableQuery"},
        "refresh": 2,  # on time range change: a source that stopped an hour ago drops out
        "regex": "",
        "sort": 1,
        "hide": 0,
        "multi": multi,
        "includeAll": multi,
        "skipUrlSync": False,
        "options": [],
    }
    if multi and all_value is not None:
        v["allValue"] = all_value
    if default is not None:
        v["current"] = {"selected": True, "text": default, "value": default}
    elif multi:
        v["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        v["current"] = {}
    return v


def query_result_variable(name: str, label: str, expr: str, regex: str, description: str) -> dict[str, Any]:
    """A hidden variable whose values Grafana extracts with `regex` from `query_result(expr)`, where each
    result series reads `name{label="value",...} value timestamp_ms`. Multi-value with every value
    selected, so that a row repeated by it appears once per value."""
    definition = f"query_result({expr})"
    return {
        "name": name,
        "label": label,
        "description": description,
        "type": "query",
        "datasource": DS,
        "definition": definition,
        "query": {"query": definition, "refId": "StandardVariableQuery"},
        "refresh": 2,  # on time range change: the values are read at the range's end
        "regex": regex,
        "sort": 3,  # numerically, ascending
        "hide": 2,  # not a picker: the values follow from the sources picked
        "multi": True,
        "includeAll": True,
        "skipUrlSync": False,
        "options": [],
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def textbox_variable(name: str, label: str, default: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "textbox",
        "description": description,
        "query": default,
        "current": {"selected": False, "text": default, "value": default},
        "options": [{"selected": True, "text": default, "value": default}],
        "hide": 0,
        "skipUrlSync": False,
    }


def dashboard(
    uid: str, title: str, description: str, variables: list[dict[str, Any]], panels: list[Panel], *, time_from: str
) -> dict[str, Any]:
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,  # shared crosshair
        "id": None,
        "links": [
            {
                "asDropdown": False,
                "icon": "external link",
                "includeVars": False,
                "keepTime": True,
                "tags": ["aht-exporter"],
                "targetBlank": False,
                "title": "aht-exporter dashboards",
                "type": "dashboards",
            }
        ],
        "panels": layout(panels),
        "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["aht-exporter"],
        "templating": {"list": variables},
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }
