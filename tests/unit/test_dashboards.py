"""The dashboards as shipped: generated from their source, Grafana 11 shaped, and honest PromQL.

What Grafana itself would say cannot be checked here (no Grafana runs in CI); what a reviewer would check
can: layout, variables, units, and the PromQL rules of the README (sum/sum, never an average of
averages; `source` kept in every aggregation; names joined from the `_info` metrics). That every query
returns data against a real Prometheus is tests/e2e/test_every_query.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from grafana.aht_mixin import build, dashboards, promql, queries, rules
from grafana.aht_mixin.grafana import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[2]
BOARDS = {b["uid"]: b for b in queries.load_dashboards()}
OVERVIEW, HEALTH = BOARDS[rules.DASHBOARD_OVERVIEW], BOARDS[rules.DASHBOARD_HEALTH]
DATA_METRICS = re.compile(
    r"\baht_(handle_time_seconds|contacts_\w+|talk_time_seconds|hold_time_seconds|acw_time_seconds)\b"
)


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in queries.panels(board) if p["type"] != "row"]


def exprs(board: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    return [(p, t["expr"]) for p in panels(board) for t in p["targets"]]


def panel(board: dict[str, Any], title: str) -> dict[str, Any]:
    return next(p for p in panels(board) if p["title"] == title)


# --- generation ------------------------------------------------------------------------------------


def test_committed_files_equal_a_fresh_generation() -> None:
    stale = build.stale(build.render())
    assert not stale, f"run `python grafana/generate.py`: {stale} differ from their source"


def test_generation_is_deterministic() -> None:
    assert build.render() == build.render()


def test_generate_script_check_mode_passes_on_the_committed_files() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "grafana" / "generate.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_check_mode_names_a_file_that_drifted(tmp_path: Path) -> None:
    rendered = build.render()
    for path, content in rendered.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(content, encoding="utf-8")
    assert build.stale(rendered, tmp_path) == []
    (tmp_path / "grafana/dashboards/aht-overview.json").write_text("{}\n", encoding="utf-8")
    assert build.stale(rendered, tmp_path) == ["grafana/dashboards/aht-overview.json"]


# --- shape -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("uid", sorted(BOARDS))
def test_dashboard_is_grafana_11_shaped(uid: str) -> None:
    board = BOARDS[uid]
    assert board["schemaVersion"] >= SCHEMA_VERSION >= 39
    assert board["uid"] == uid and board["title"] and board["id"] is None
    assert "aht-exporter" in board["tags"]
    ids = [p["id"] for p in queries.panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels(board):
        assert p["title"] and p["description"], p
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}" and t["expr"].strip()
        if p["type"] != "table":
            assert p["fieldConfig"]["defaults"].get("unit"), f"{p['title']}: no unit"


@pytest.mark.parametrize("uid", sorted(BOARDS))
def test_panels_fit_the_grid_without_overlapping(uid: str) -> None:
    taken: set[tuple[int, int]] = set()
    for p in queries.panels(BOARDS[uid]):
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, p["title"]
        cells = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & taken, f"{p['title']} overlaps another panel"
        taken |= cells


@pytest.mark.parametrize("uid", sorted(BOARDS))
def test_every_variable_used_is_defined_and_every_defined_one_is_used(uid: str) -> None:
    board = BOARDS[uid]
    defined = {v["name"] for v in board["templating"]["list"]}
    text = [t["expr"] for _, t in ((p, t) for p in panels(board) for t in p["targets"])]
    text += [v.get("definition", "") for v in board["templating"]["list"]]
    text += [f"{p['title']} {p['description']}" for p in panels(board)]
    text += [p["title"] for p in queries.panels(board) if p["type"] == "row"]
    used = {m for s in text for m in re.findall(r"\$\{?(\w+)", s)} - queries.GLOBAL_VARIABLES
    assert used <= defined, f"undefined: {used - defined}"
    assert defined - used <= {"datasource"}, f"never used: {defined - used - {'datasource'}}"
    assert board["templating"]["list"][0]["type"] == "datasource"


def test_overview_variables_are_the_issue_s() -> None:
    by_name = {v["name"]: v for v in OVERVIEW["templating"]["list"]}
    assert {"datasource", "source", "provider", "media_type", "queue", "window"} <= set(by_name)
    for name in ("source", "provider", "media_type", "queue"):
        assert by_name[name]["multi"] and by_name[name]["allValue"] == ".*", name
        assert by_name[name]["definition"].startswith("label_values("), name
    # One window at a time: adding windows together is meaningless.
    assert not by_name["window"]["multi"] and not by_name["window"]["includeAll"]
    assert by_name["window"]["current"]["value"] == "1h"


# --- PromQL ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("uid", sorted(BOARDS))
def test_no_average_of_averages(uid: str) -> None:
    for p, expr in exprs(BOARDS[uid]):
        assert not re.search(r"\bavg(_over_time)?\b", expr), f"{p['title']}: averages an average"
        if "aht_seconds" in expr:
            # Only where a provider reports nothing but its own average: shown as given, never combined.
            assert "unless on (source) aht_contacts_handled" in expr, p["title"]
            assert not re.search(r"\b(sum|avg|min|max)\b[^(]*\(\s*aht_seconds", expr), p["title"]
        if "aht_handle_time_seconds" in expr:
            assert "aht_contacts_handled" in expr, f"{p['title']}: handle time not divided by contacts"


def test_every_aggregation_of_data_series_keeps_source() -> None:
    """Two sources may count the same contacts: a sum across sources could count them twice."""
    for p, expr in exprs(OVERVIEW):
        for m in re.finditer(r"\bsum(?: by \(([^)]*)\))? \(([^()]*)\)", expr):
            if DATA_METRICS.search(m.group(2)):
                labels = {x.strip() for x in (m.group(1) or "").split(",")}
                assert "source" in labels or p.get("repeat") == "source", f"{p['title']}: {m.group(0)}"


def test_names_are_joined_from_the_info_metrics_keeping_unnamed_series() -> None:
    for title, kind in (
        ("AHT by queue", "queue"),
        ("AHT by queue and media type", "queue"),
        ("Highest AHT: top 10 agents", "agent"),
        ("Lowest AHT: bottom 10 agents", "agent"),
        ("Provider-reported AHT by queue", "queue"),
        ("Provider-reported AHT by agent", "agent"),
    ):
        for t in panel(OVERVIEW, title)["targets"]:
            assert f"* on (source, {kind}) group_left ({kind}_name) aht_{kind}_info" in t["expr"], title
            assert f"or on (source, {kind}) (" in t["expr"], f"{title}: an inner join drops unnamed series"


def test_overview_has_the_panels_the_issue_asks_for() -> None:
    components = panel(OVERVIEW, "Handle-time components per contact: $source")
    assert components["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    parts = " ".join(t["expr"] for t in components["targets"])
    assert all(f"aht_{c}_time_seconds" in parts for c in ("talk", "hold", "acw"))
    contacts = " ".join(t["expr"] for t in panel(OVERVIEW, "Contacts handled, offered, answered, abandoned")["targets"])
    assert all(f"aht_contacts_{c}" in contacts for c in ("handled", "offered", "abandoned"))
    assert "topk(" in panel(OVERVIEW, "Highest AHT: top 10 agents")["targets"][0]["expr"]
    assert "bottomk(" in panel(OVERVIEW, "Lowest AHT: bottom 10 agents")["targets"][0]["expr"]
    for title in ("AHT by queue", "AHT by media type", "AHT per source"):
        expr = panel(OVERVIEW, title)["targets"][0]["expr"]
        assert re.search(r"sum by \([^)]*\) \(aht_handle_time_seconds\{.*\n\s*/ \(sum by", expr), title


def test_health_dashboard_covers_every_health_metric() -> None:
    text = " ".join(expr for _, expr in exprs(HEALTH))
    for name in (
        'up{job=~"$job"}',
        "aht_exporter_source_up",
        "time() - max by (source) (aht_exporter_data_end_timestamp_seconds",
        "aht_exporter_last_success_timestamp_seconds",
        "histogram_quantile(0.95, sum by (source, le) (rate(aht_exporter_poll_duration_seconds_bucket",
        "aht_exporter_polls_total",
        "sum by (source, status) (increase(aht_exporter_api_requests_total",
        "aht_exporter_rate_limited_total",
        "aht_exporter_series_dropped_total",
        'sum without (source) (\n  increase(aht_exporter_tokens_issued_total{job=~"$job", provider="ozonetel"}[1h])',
        "sum by (source) (increase(aht_exporter_tokens_issued_total",
        "aht_exporter_build_info",
    ):
        assert name in text, name


def test_the_tokens_panel_draws_the_token_budget_alert_at_8() -> None:
    tokens = panel(HEALTH, "Tokens issued in the last hour")
    defaults = tokens["fieldConfig"]["defaults"]
    assert defaults["custom"]["thresholdsStyle"] == {"mode": "dashed"}
    assert [s["value"] for s in defaults["thresholds"]["steps"]] == [None, rules.TOKEN_BUDGET_WARN]
    # The per-exporter line is the alert's sum: not narrowed to the picked sources.
    assert "$source" not in tokens["targets"][0]["expr"]


def test_every_metric_queried_is_in_the_readme_metric_table_or_a_rule() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`(aht_\w+)", readme))
    documented |= {f"{n}_{s}" for n in documented for s in ("bucket", "sum", "count")}
    recorded = {
        r.get("record")
        for f in queries.PROMETHEUS_RULE_FILES
        for g in yaml.safe_load(f.read_text())["groups"]
        for r in g["rules"]
    }
    prometheus_own = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
    for board in BOARDS.values():
        for p, expr in exprs(board):
            names = set(
                re.findall(r"(?<![\w:\"$])([a-z_]+(?::[a-z_]+)*)(?=\{|\[| *\)|\s*$|\s+(?:unless|or|and)\b)", expr)
            )
            metrics = {n for n in names if n.startswith("aht") or n in prometheus_own or ":" in n}
            unknown = metrics - documented - recorded - prometheus_own
            assert not unknown, f"{p['title']}: {unknown}"


def test_docs_describe_every_panel() -> None:
    doc = (ROOT / "docs" / "dashboards.md").read_text(encoding="utf-8")
    for board in BOARDS.values():
        for p in panels(board):
            assert f"| {p['title']} |" in doc, f"docs/dashboards.md lacks a row for {p['title']!r}"


def test_readme_has_a_panel_table_per_dashboard() -> None:
    """Screenshots are impossible here: the README describes each panel in a table, one per dashboard."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Grafana dashboards") : readme.index("### Prometheus rules and alerts")]
    for board in BOARDS.values():
        start = section.index(f"**{board['title']}** (`uid: {board['uid']}`)")
        table = section[start:].split("\n\n")[1]
        rows = [line.split(" | ")[0].removeprefix("| ") for line in table.splitlines()[2:]]
        assert rows == [p["title"] for p in panels(board)], f"README table of {board['title']}"


# --- provisioning ----------------------------------------------------------------------------------


def test_provisioning_points_at_the_dashboards_and_the_alerts_data_source() -> None:
    prov = ROOT / "grafana" / "provisioning"
    (ds,) = yaml.safe_load((prov / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert ds["type"] == "prometheus" and ds["uid"] == rules.DATASOURCE_UID and ds["isDefault"]
    (provider,) = yaml.safe_load((prov / "dashboards" / "aht-exporter.yaml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    alerting = yaml.safe_load((prov / "alerting" / "aht-exporter-alerts.yaml").read_text())
    uids = {d["datasourceUid"] for g in alerting["groups"] for r in g["rules"] for d in r["data"]}
    assert uids == {rules.DATASOURCE_UID, "__expr__"}


def test_grafana_alerts_link_to_existing_panels() -> None:
    alerting = yaml.safe_load((ROOT / "grafana/provisioning/alerting/aht-exporter-alerts.yaml").read_text())
    for rule in (r for g in alerting["groups"] for r in g["rules"]):
        board = BOARDS[rule["annotations"]["__dashboardUid__"]]
        assert int(rule["annotations"]["__panelId__"]) in {p["id"] for p in panels(board)}, rule["title"]


def test_variable_substitution_follows_grafana() -> None:
    values = queries.variable_values(OVERVIEW)
    assert values["source"] == ".*" and values["window"] == "1h" and values["min_contacts"] == "3"
    assert queries.substitute('x{a=~"$source",b="${window}",c="[[window]]"}[$__rate_interval]', values) == (
        'x{a=~".*",b="1h",c="1h"}[1m]'
    )
    assert queries.regex_escape("a.b-c") == "a\\\\.b-c"
    assert queries.variable_query('label_values(up{job=~"x"}, instance)') == 'group by (instance) (up{job=~"x"})'
    with pytest.raises(KeyError):
        queries.substitute("$nope", values)


def test_time_range_variables_follow_grafana_s_formats() -> None:
    """`${__from}` is Unix milliseconds, `${__from:date:seconds}` Unix seconds (Grafana's global variables);
    the default range is the dashboard's own, now-6h to now."""
    values = queries.variable_values(OVERVIEW, time_range=(1793577600, 1793664000))
    assert queries.substitute("x @ ${__from:date:seconds} offset -${lag}s, ${__to}", {**values, "lag": "60"}) == (
        "x @ 1793577600 offset -60s, 1793664000000"
    )
    start, end = queries.default_time_range(OVERVIEW, 1_000_000)
    assert (start, end) == (1_000_000 - 6 * 3600, 1_000_000)
    assert queries.variable_values(OVERVIEW)["lag"] == ".+"  # no Prometheus to ask: any value
    assert queries.variable_query("query_result(max(x))") == "max(x)"


def test_query_result_options_follow_grafana() -> None:
    item = {"metric": {"lag": "7530"}, "value": [1793664000.5, "2"]}
    assert queries.query_result_text(item) == '{lag="7530"} 2 1793664000500'
    named = {"metric": {"__name__": "up", "job": "a"}, "value": [1, "1"]}
    assert queries.query_result_text(named) == 'up{job="a"} 1 1000'
    texts = ['{lag="7530"} 1 1000', '{lag="3930"} 3 1000', '{lag="7530"} 1 2000', "{} 5 1000"]
    assert queries.variable_regex('/lag="(\\d+)"/', texts) == ["7530", "3930"]
    assert queries.variable_regex("/^up/", ["up{} 1 1", "down{} 1 1"]) == ["up{} 1 1"]
    assert queries.variable_regex("", texts) == texts


# --- exact ranges (issue 14) -----------------------------------------------------------------------

EXACT_TITLES = (
    "AHT by queue over the time range",
    "AHT by media type over the time range",
    "Contacts handled by queue over the time range",
)


def _squeezed(expr: str) -> str:
    return " ".join(expr.split())


def _documented_promql() -> str:
    """The PromQL block of docs/exact-ranges.md, without its comment line."""
    doc = (ROOT / "docs" / "exact-ranges.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```promql\n(.*?)```", doc, re.S)
    return "".join(line + "\n" for line in block.splitlines() if not line.startswith("#"))


def test_the_documented_promql_is_what_the_panels_are_built_from() -> None:
    """docs/exact-ranges.md's example, rebuilt by the function the panels use, is the same text: the docs
    and the dashboard cannot drift apart."""
    example = promql.exact_increase(
        "aht_handle_time_seconds_total",
        ["queue"],
        ['source="genesys-eu"'],
        start="1793577600",
        end="1793664000",
        lag="7530",
    )
    assert example + "\n" == _documented_promql()


@pytest.mark.parametrize("title", EXACT_TITLES)
def test_exact_range_panels_are_the_documented_form_over_the_dashboard_s_range(title: str) -> None:
    p = panel(OVERVIEW, title)
    (target,) = p["targets"]
    assert target["instant"] and not target["range"]
    label = "media_type" if "media type" in title else "queue"
    metrics = (
        ["aht_contacts_handled_total"]
        if title.startswith("Contacts")
        else [
            "aht_handle_time_seconds_total",
            "aht_contacts_handled_total",
        ]
    )
    expr = _squeezed(target["expr"])
    for metric in metrics:
        documented = _documented_promql().replace("aht_handle_time_seconds_total", metric)
        documented = documented.replace("@ 1793664000 offset -7530s", "@ ${__to:date:seconds} offset -${lag}s")
        documented = documented.replace("@ 1793577600 offset -7530s", "@ ${__from:date:seconds} offset -${lag}s")
        documented = documented.replace("sum by (queue)", f"sum by (source, {label})")
        documented = documented.replace('{source="genesys-eu"}', "{" + ", ".join(dashboards.F_ANY_WINDOW) + "}")
        assert _squeezed(documented) in expr, f"{title}: {metric} is not the documented form"
    if len(metrics) == 2:  # AHT: handle / handled, absent (not NaN, not Inf) where no contact was handled
        handled = _squeezed(promql.exact_increase(metrics[1], ["source", label], dashboards.F_ANY_WINDOW))
        assert f"/ ( ( {handled} ) > 0 )" in expr, title
    # Only the sources whose lag is this row's: another source's counters read at this lag are not exact.
    assert "== ${lag} ) and on (source) group by (source) (aht_contacts_handled_total{" in expr, title
    assert f'{label}!=""}} @ ${{__to:date:seconds}} offset -${{lag}}s)' in expr, title


def test_exact_range_panels_sit_in_a_row_repeated_per_lag() -> None:
    """Sources with different lags cannot share one `offset`: Grafana repeats the row once per lag value,
    and every panel reading `$lag` is inside it, and only those."""
    board = OVERVIEW["panels"]
    (start,) = (i for i, p in enumerate(board) if p.get("repeat") == "lag")
    assert board[start]["type"] == "row" and "${lag}" in board[start]["title"]
    end = next(i for i in range(start + 1, len(board)) if board[i]["type"] == "row")
    inside = board[start + 1 : end]
    assert [p["title"] for p in inside] == list(EXACT_TITLES)
    uses_lag = {p["title"] for p in panels(OVERVIEW) if any("${lag}" in t["expr"] for t in p["targets"])}
    assert uses_lag == set(EXACT_TITLES)
    for p in inside:
        assert p["type"] == "bargauge" and p["fieldConfig"]["defaults"]["noValue"], p["title"]
        assert "lag" in p["description"] and "ago" in p["description"], f"{p['title']}: the range's end"
        assert "snap to whole buckets" in p["description"], f"{p['title']}: the bucket grid"


def test_the_lag_variable_is_hidden_and_grafana_can_read_it() -> None:
    (lag,) = (v for v in OVERVIEW["templating"]["list"] if v["name"] == "lag")
    assert lag["type"] == "query" and lag["hide"] == 2 and lag["includeAll"] and lag["multi"]
    assert lag["current"]["value"] == ["$__all"] and "allValue" not in lag, "All must list each lag, not .*"
    assert lag["refresh"] == 2, "the lag is read at the range's end: again when the range changes"
    # Grafana recognises query_result(...) only on one line (its PrometheusQueryResultRegex).
    assert re.fullmatch(r"query_result\((.+)\)", lag["definition"]) and "\n" not in lag["definition"]
    assert lag["query"]["query"] == lag["definition"]
    expr = queries.variable_query(lag["definition"])
    assert expr.startswith('count_values("lag", aht_exporter_totals_lag_seconds{source=~"$source"')
    assert "offset -35d" in expr, "a backfilled range, from before the exporter ran, finds the lag ahead"
    assert queries.variable_regex(lag["regex"], ['{lag="3930"} 3 1793664000000']) == ["3930"]
