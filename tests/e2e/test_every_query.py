"""Every PromQL expression we ship, evaluated by a real Prometheus scraping the demo exporter.

One demo exporter (the `--demo` simulators and sources, in a thread of its own) and one Prometheus with
deploy/prometheus's rules, scraping every second; then every panel query and variable query of every
dashboard, every recording rule, every alert and every Grafana alert query goes through Prometheus'
HTTP API. Each must evaluate without error, and each must return at least one series, except:

- an alert's own expression and its guard (`unless ...`): on a healthy demo they return nothing. In
  their place the alert's quantity, the expression without the comparison, must return series.
- queries listed in NEEDS_PROVIDER: they read series only some provider exports. They are skipped, with
  the reason, only while the demo has no source of that provider, and checked as soon as it has one.

The last test then breaks the demo on purpose (a 429, failing polls, a dead HTTP server) and sees the
alert expressions themselves, comparison and all, come true.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from aiohttp import web

from aht_exporter.clock import SystemClock
from aht_exporter.scheduler import Exporter
from aht_exporter.server import start_server
from aht_exporter.simulator.demo import Demo
from grafana.aht_mixin import queries as q
from grafana.aht_mixin.promql import JOB
from grafana.aht_mixin.rules import ALERTS, DASHBOARD_OVERVIEW, DATA_AGE_DEFAULTS, Alert, routed
from tests.prometheus_bin import PrometheusServer

pytestmark = pytest.mark.prometheus

T = TypeVar("T")

NEEDS_PROVIDER: dict[str, str] = {
    # Panels of sources that export averages without sums: only Ozonetel does.
    "Provider-reported AHT by queue": "ozonetel",
    "Provider-reported AHT by agent": "ozonetel",
    "Provider-reported AHT over time": "ozonetel",
}
"""Panel title -> the provider whose series it needs."""

EMPTY_ON_A_FRESH_DEMO: dict[str, str] = {
    title: "a new install counts from its first poll: in a demo a minute old, no contact is in a final bucket "
    "yet, so no AHT over a range; tests/e2e/test_exact_range_panels.py checks these on backfilled history"
    for title in ("AHT by queue over the time range", "AHT by media type over the time range")
}
"""Panel title -> why it must evaluate but may return nothing here."""

HEALTH_ALERTS = {a.name for a in ALERTS if a.name.startswith("AhtExporter")}
"""Alerts a healthy demo must not even have pending. AhtAboveThreshold is about the demo's random
contacts, not the exporter's health: it may legitimately be pending, so it is left out."""

WAIT = 60.0  # seconds: upper bound of each wait for Prometheus (start, scrape, rule evaluation)


class DemoExporter:
    """The demo exporter serving on loopback from an event loop in a background thread, so the tests
    themselves stay synchronous while Prometheus scrapes it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="demo-exporter", daemon=True)
        self.address = ""
        self._demo: Demo | None = None
        self._exporter: Exporter | None = None
        self._runner: web.AppRunner | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self.thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        self._demo = Demo(SystemClock())
        config = await self._demo.start()
        self._exporter = Exporter(config)
        self._runner, bound = await start_server(self._exporter, "127.0.0.1:0")
        self.address = bound[0]
        await self.poll()

    async def poll(self, *, expect_ok: bool = True) -> None:
        assert self._exporter is not None
        ok = await self._exporter.poll_all()
        assert ok or not expect_ok, "a demo source failed to poll"
        await self._exporter.rendered_now()

    async def inject(self, spec: str) -> None:
        """A simulator fault, as `--demo.fault` takes it: `PROVIDER:FAULT[:COUNT]`."""
        assert self._demo is not None
        self._demo.inject(spec)

    async def stop_serving(self) -> None:
        """Close the HTTP server only: Prometheus' scrapes fail from now on."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self._stop(), timeout=20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._exporter is not None:
            await self._exporter.aclose()
        if self._demo is not None:
            await self._demo.stop()


class Prometheus:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10)

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query, at `at` (Unix seconds) or now."""
        params: dict[str, str | float] = {"query": promql} if at is None else {"query": promql, "time": at}
        r = self.http.get("/api/v1/query", params=params)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{promql}\n-> {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for_rule_evaluations(self, after: float) -> None:
        """Until every rule group has been evaluated twice since `after` (Unix seconds, this host's clock,
        which is Prometheus' too): a group last evaluated more than an interval after `after` was also
        evaluated one interval before that, and after `after` both times."""
        deadline = time.monotonic() + WAIT
        while True:
            groups = self.http.get("/api/v1/rules").json()["data"]["groups"]
            assert groups, "Prometheus loaded no rule group"
            if all(evaluated_at(g["lastEvaluation"]) > after + g["interval"] for g in groups):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the rule groups were not evaluated twice within {WAIT:.0f}s: {groups}")
            time.sleep(0.25)  # waiting for Prometheus' evaluations, bounded by WAIT

    def wait_for(self, promql: str, what: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + WAIT
        while True:
            with contextlib.suppress(httpx.TransportError):
                result = self.query(promql)
                if result:
                    return result
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {WAIT:.0f}s for {what}: {promql} returned nothing")
            time.sleep(0.25)

    def label_values(self, definition: str) -> list[str]:
        """What a variable's query lists in Grafana: label values, or for `query_result(...)` each series as
        Grafana's text (the variable's regex then picks the values, in queries.variable_values)."""
        if q.is_query_result(definition):
            return [q.query_result_text(r) for r in self.query(q.variable_query(definition))]
        label = definition.rstrip(")").rsplit(",", 1)[1].strip()
        return sorted({r["metric"].get(label, "") for r in self.query(q.variable_query(definition))} - {""})

    def lags(self) -> list[str]:
        """The overview's `lag` values as Grafana would list them: one per row of the exact-range panels."""
        board = q.dashboard(DASHBOARD_OVERVIEW)
        (lag,) = (v for v in board["templating"]["list"] if v["name"] == "lag")
        values = q.variable_values(board, self.label_values)
        return q.variable_regex(lag["regex"], self.label_values(q.substitute(lag["definition"], values)))


def evaluated_at(rfc3339: str) -> float:
    """Unix seconds of Prometheus' `lastEvaluation` (nanosecond digits, `Z` or an offset)."""
    moment = re.fullmatch(r"([^.Z+]+)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", rfc3339)
    assert moment is not None, rfc3339
    whole, fraction, zone = moment.groups()
    seconds = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone)).timestamp()
    return seconds + float(f"0.{fraction or 0}")


@dataclass
class Live:
    prometheus: Prometheus
    demo: DemoExporter


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp: Path = tmp_path_factory.mktemp("every-query")
    demo = DemoExporter()
    try:
        demo.start()
        rule_files = "".join(f"  - {p}\n" for p in q.PROMETHEUS_RULE_FILES)
        config = (
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n{rule_files}"
            f"scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{demo.address}']\n"
        )
        with PrometheusServer(tmp, config) as server:
            yield from ready_and_polled(Prometheus(server.url), demo)
    finally:
        demo.stop()


def ready_and_polled(prom: Prometheus, demo: DemoExporter) -> Iterator[Live]:
    """`live`, once Prometheus has scraped three polls and evaluated its rules over the last one."""
    try:
        prom.wait_for("queue_media_type:aht_seconds:ratio", "the first scrape and rule evaluation")
        # Two more polls, scraped in between, so every counter and histogram has moved inside the
        # dashboards' 15m and 1h ranges: rates and quantiles then have something to show.
        for expected in (2, 3):
            demo.run(demo.poll())
            prom.wait_for(f'min(aht_exporter_polls_total{{result="success"}}) >= {expected}', f"poll {expected}")
        prom.wait_for_rule_evaluations(after=time.time())  # the rules have seen the final state
        yield Live(prom, demo)
    finally:
        prom.http.close()


@pytest.fixture
def prometheus(live: Live) -> Prometheus:
    return live.prometheus


def _providers(prom: Prometheus) -> set[str]:
    return {r["metric"]["provider"] for r in prom.query("group by (provider) (aht_exporter_source_up)")}


ALL_QUERIES = [*q.dashboard_queries(), *q.rule_queries(), *q.grafana_alert_queries()]
GUARDED = {a.name for a in ALERTS if a.unless}
"""Alerts whose Grafana query carries the guard (`unless ...`): it may be empty on the demo."""


def test_the_query_list_covers_every_artefact() -> None:
    assert {x.kind for x in ALL_QUERIES} == {"variable", "panel", "record", "alert", "grafana-alert"}
    titles = {x.title for x in ALL_QUERIES if x.kind == "panel"}
    assert set(NEEDS_PROVIDER) <= titles, "NEEDS_PROVIDER names a panel that no longer exists"
    assert set(EMPTY_ON_A_FRESH_DEMO) <= titles, "EMPTY_ON_A_FRESH_DEMO names a panel that no longer exists"
    assert {x.id.split("/")[1] for x in ALL_QUERIES if x.kind == "alert"} == {a.name for a in ALERTS}
    assert {x.id.split("/")[1] for x in ALL_QUERIES if x.kind == "grafana-alert"} == {a.name for a in ALERTS}


def exact_range(lag: int, now: int, span: int = 3600) -> dict[str, str]:
    """A dashboard time range ending `lag` (and 2 s) before `now`, for the exact-range panels of the row
    repeated for that lag: its end is read at now - 2 s, where the demo's counters are scraped; its start
    `span` earlier, before this Prometheus' first scrape, so every counter counts as new in the range (the
    `or ... * 0` branch) and the panels show the counters' whole values."""
    end = now - lag - 2
    return {"lag": str(lag), **q.time_range_values(end - span, end)}


@pytest.mark.parametrize("query", ALL_QUERIES, ids=lambda x: x.id)
def test_query_evaluates_against_the_demo(prometheus: Prometheus, query: q.Query) -> None:
    needs = NEEDS_PROVIDER.get(query.title)
    if needs and needs not in _providers(prometheus):
        pytest.skip(f"needs a {needs} source in the demo, which has none yet")
    # A panel of the row repeated per `lag` gets one lag each: evaluated once per value, over a range
    # that ended that lag ago (one ending later is empty by design: docs/exact-ranges.md).
    overrides = (
        [exact_range(int(lag), int(time.time())) for lag in prometheus.lags()] if "lag" in query.variables else [{}]
    )
    assert overrides, "the demo's sources export no aht_exporter_totals_lag_seconds"
    for values in overrides:
        expr = query.promql(prometheus.label_values, values)
        # Grafana runs a panel's instant query at the end of the dashboard's time range.
        result = prometheus.query(expr, at=float(values["__to:date:seconds"]) if values else None)
        guarded = query.kind == "grafana-alert" and query.id.split("/")[1] in GUARDED
        if query.must_return_series and not guarded and query.title not in EMPTY_ON_A_FRESH_DEMO:
            assert result, f"{query.id} returned no series:\n{expr}"


def _overview_panel(title: str) -> q.Query:
    (query,) = (x for x in ALL_QUERIES if x.kind == "panel" and x.board == DASHBOARD_OVERVIEW and x.title == title)
    return query


def _by_source_queue(result: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    return {(r["metric"]["source"], r["metric"].get("queue", "")): float(r["value"][1]) for r in result}


def test_the_lag_variable_lists_each_distinct_lag_of_the_demo_s_sources(prometheus: Prometheus) -> None:
    gauges = {str(round(float(r["value"][1]))) for r in prometheus.query("aht_exporter_totals_lag_seconds")}
    # Genesys by queue (refresh 2h) and the sources whose longest window is 1h or 2h: two rows, not one.
    assert sorted(prometheus.lags(), key=int) == sorted(gauges, key=int) and len(gauges) >= 2


def test_exact_range_panels_are_the_counters_at_the_range_s_ends(prometheus: Prometheus) -> None:
    """Per lag, as Grafana runs the panels (at the range's end, where this Prometheus has no lag gauge yet:
    the lag comes from the look-ahead): over a range that started before the first scrape, the contacts
    panel shows the counters' values at the range's end plus the lag, for that lag's sources grouped by
    queue, and the AHT panel their ratio (none in a fresh demo: all are 0); over an empty range
    (start = end), zero contacts and no AHT at all (absent, not NaN); over a range that ends less than the
    lag ago, nothing (the counters there are not final yet). Values against the provider's truth:
    tests/e2e/test_exact_range_panels.py."""
    contacts, aht = (
        _overview_panel("Contacts handled by queue over the time range"),
        _overview_panel("AHT by queue over the time range"),
    )
    for lag in map(int, prometheus.lags()):
        now = int(time.time())
        values = exact_range(lag, now)
        at = int(values["__to:date:seconds"]) + lag
        mine = (
            f"and on (source) (aht_exporter_totals_lag_seconds == {lag})\n"
            'and on (source) group by (source) (aht_contacts_handled_total{queue!=""})'
        )
        handled = _by_source_queue(
            prometheus.query(f"sum by (source, queue) (aht_contacts_handled_total @ {at}) {mine}")
        )
        handle = _by_source_queue(
            prometheus.query(f"sum by (source, queue) (aht_handle_time_seconds_total @ {at}) {mine}")
        )
        assert handled, f"lag {lag}: the demo has no source of that lag grouped by queue"
        end = float(values["__to:date:seconds"])
        assert _by_source_queue(prometheus.query(contacts.promql(prometheus.label_values, values), end)) == handled
        got = _by_source_queue(prometheus.query(aht.promql(prometheus.label_values, values), end))
        assert got == pytest.approx({k: handle[k] / n for k, n in handled.items() if n > 0}), f"lag {lag}"

        empty = exact_range(lag, now, span=0)
        zeros = prometheus.query(contacts.promql(prometheus.label_values, empty), end)
        assert set(_by_source_queue(zeros)) == set(handled) and {float(r["value"][1]) for r in zeros} == {0}
        assert prometheus.query(aht.promql(prometheus.label_values, empty), end) == []

        too_recent = {"lag": str(lag), **q.time_range_values(now - 3600, now)}
        assert prometheus.query(contacts.promql(prometheus.label_values, too_recent), now) == []


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a.name)
def test_alert_quantity_returns_series_on_a_healthy_demo(prometheus: Prometheus, alert: Alert) -> None:
    """The alert without its comparison: proves its metric names, labels and vector matching are real.

    An alert that compares with the past (`offset 1w`) has nothing to compare with in a Prometheus a minute
    old: it must evaluate, and, compared with the present instead, return series."""
    if alert.lookback:
        prometheus.query(alert.query)
        present = alert.query.replace(f" offset {alert.lookback}", "")
        assert present != alert.query and prometheus.query(present), f"{alert.name}: {present}"
    else:
        assert prometheus.query(alert.query), f"{alert.name}: {alert.query}"
    if alert.unless:
        prometheus.query(alert.unless)  # must evaluate; empty when every queue has enough contacts


@pytest.mark.parametrize("alert", [a for a in ALERTS if a.routing != "none"], ids=lambda a: a.name)
def test_alert_quantity_carries_the_demo_s_routing_labels(prometheus: Prometheus, alert: Alert) -> None:
    """The routing join the alerts end with, over their quantity: every series gets the source's labels
    (the demo sets no queue labels, so the queue alerts fall back to the source's)."""
    query = alert.query.replace(f" offset {alert.lookback}", "") if alert.lookback else alert.query
    result = prometheus.query(routed(query, alert.routing))
    assert result, f"{alert.name}: {query}"
    assert {(r["metric"].get("team"), r["metric"].get("site")) for r in result} == {("contact-center", "demo")}


def test_every_rule_evaluates_without_error(prometheus: Prometheus) -> None:
    groups = prometheus.http.get("/api/v1/rules").json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == sum(1 for x in ALL_QUERIES if x.kind in {"record", "alert"})
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not broken, broken


def test_no_exporter_health_alert_is_pending_on_a_healthy_demo(prometheus: Prometheus) -> None:
    alerts = prometheus.http.get("/api/v1/alerts").json()["data"]["alerts"]
    assert not [a for a in alerts if a["labels"]["alertname"] in HEALTH_ALERTS], alerts


def test_thresholds_file_sets_the_demo_agents_source_data_age_threshold(prometheus: Prometheus) -> None:
    got = {
        r["metric"]["source"]: float(r["value"][1]) for r in prometheus.query("aht_exporter:data_age_threshold_seconds")
    }
    sources = {r["metric"]["source"] for r in prometheus.query("aht_exporter_source_up")}
    assert set(got) == sources, "every source has a data-age threshold"
    # demo-genesys-agents has 15-minute buckets: the thresholds file sets two of them plus the delay for
    # it; the other Genesys source keeps the provider's default, made for 30-minute buckets.
    assert got["demo-genesys-agents"] == 2 * 900 + 60
    assert got["demo-genesys"] == 2 * 1800 + 60 == DATA_AGE_DEFAULTS["genesys"]


def test_provider_averages_join_the_queue_aht_record_as_reported(prometheus: Prometheus) -> None:
    """Sources without sums (Ozonetel) pass their per-queue averages through, unchanged and uncombined."""
    reported = prometheus.query('aht_seconds{queue!="", agent=""} unless on (source) aht_contacts_handled')
    if not reported:
        pytest.skip("needs a source without sums (ozonetel) in the demo, which has none yet")
    keys = ("source", "provider", "window", "queue", "media_type")

    def by_key(result: list[dict[str, Any]]) -> dict[tuple[str, ...], float]:
        return {tuple(r["metric"].get(k, "") for k in keys): float(r["value"][1]) for r in result}

    recorded = prometheus.query("queue_media_type:aht_seconds:ratio unless on (source) aht_contacts_handled")
    assert by_key(recorded) == by_key(reported)


# Last in this module, because it breaks the demo for good: alert expressions, comparison and all, come
# true against the real exporter when what they watch goes wrong. (Staleness, dropped series and AHT
# thresholds need hours or other configs: their promtool tests in deploy/prometheus show them firing.)


def test_alert_conditions_come_true_when_the_exporter_fails(live: Live) -> None:
    prom, demo = live.prometheus, live.demo
    alerts = {a.name: a for a in ALERTS}

    demo.run(demo.inject("genesys:429:1"))  # one "slow down" (Retry-After: 1): the poll still succeeds
    demo.run(demo.poll())
    limited = prom.wait_for(alerts["AhtExporterRateLimited"].expr, "the rate-limited response to be scraped")
    assert {r["metric"]["provider"] for r in limited} == {"genesys"}

    demo.run(demo.inject("genesys:missing-field"))  # every Genesys response now fails validation
    demo.run(demo.poll(expect_ok=False))
    down = prom.wait_for(alerts["AhtExporterSourceDown"].expr, "the failed polls to be scraped")
    assert {r["metric"]["source"] for r in down} == {"demo-genesys", "demo-genesys-agents"}
    # The demo's routing labels (its `defaults: labels`), joined from aht_source_labels_info.
    assert {(r["metric"]["team"], r["metric"]["site"]) for r in down} == {("contact-center", "demo")}

    demo.run(demo.stop_serving())
    (target,) = prom.wait_for(alerts["AhtExporterDown"].expr, "a failed scrape")
    assert target["metric"]["job"] == JOB
