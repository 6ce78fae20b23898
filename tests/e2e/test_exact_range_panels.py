"""The AHT overview's exact-range panels, as Grafana runs them, against backfilled history (issue 14).

Two days of the demo's Genesys source go through `aht-exporter backfill` (on a virtual clock shared with the
simulator); the exporter then runs from `NOW` on, which is when its `aht_exporter_totals_lag_seconds` gauge
starts. `promtool tsdb create-blocks-from openmetrics` makes blocks of both, and a real Prometheus opens
them. Each panel query, with Grafana's variables filled in for a dashboard time range (`lag` from the
dashboard's own `query_result` variable and regex, evaluated at the range's end as Grafana does) and run at
the range's end, equals the simulator's ground truth per queue and per media type: contacts to the contact,
AHT to the millisecond. The backfilled range has no lag gauge of its own: the panels find it ahead.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aht_exporter.backfill import Backfill, counter_lag, parse_when
from aht_exporter.clock import FakeClock
from aht_exporter.config import Config
from aht_exporter.simulator.demo import Demo
from aht_exporter.simulator.genesys import GenesysSimulator
from aht_exporter.state import StateStore
from grafana.aht_mixin import queries as q
from grafana.aht_mixin.rules import DASHBOARD_OVERVIEW
from tests.prometheus_bin import PrometheusServer, require

pytestmark = pytest.mark.prometheus

HOUR, DAY = 3600, 86400
FROM = parse_when("2026-11-02", "--from")
TO = parse_when("2026-11-04", "--to")  # two days of history
NOW = TO + 3 * HOUR  # when the backfill runs, and the exporter starts
SOURCE = "demo-genesys"
GROUP_BY = ("media_type", "queue")

RANGES = {
    "a day": (FROM, FROM + DAY),
    "an hour": (FROM + 30 * HOUR, FROM + 31 * HOUR),
    "up to the backfill's end": (FROM + 20 * HOUR, TO),
}


def only(config: Config, name: str) -> Config:
    return Config(sources=[s for s in config.sources if s.name == name], path=config.path)


def lag_gauge(lag: int) -> str:
    """The exporter's lag gauge as scrapes from NOW on would have stored it: none before NOW."""
    samples = "".join(
        f'aht_exporter_totals_lag_seconds{{provider="genesys",source="{SOURCE}"}} {lag} {t}\n'
        for t in range(NOW, NOW + HOUR, 60)
    )
    return f"# HELP aht_exporter_totals_lag_seconds lag\n# TYPE aht_exporter_totals_lag_seconds gauge\n{samples}# EOF\n"


class History:
    """A Prometheus over the backfilled blocks, queried at chosen instants."""

    def __init__(self, api: str) -> None:
        self.http = httpx.Client(base_url=api, timeout=30)

    def query(self, promql: str, at: int) -> list[dict[str, Any]]:
        """Asked of a ready Prometheus (it has opened the blocks): one answer, no retries."""
        r = self.http.get("/api/v1/query", params={"query": promql, "time": at})
        body = r.json()
        assert body["status"] == "success", f"{promql}\n-> {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def resolver(self, at: int) -> Callable[[str], list[str]]:
        """A variable's query as Grafana runs it for a dashboard whose range ends at `at`."""

        def resolve(definition: str) -> list[str]:
            assert q.is_query_result(definition), f"needs a value from a live exporter: {definition}"
            return [q.query_result_text(r) for r in self.query(q.variable_query(definition), at)]

        return resolve


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[History, GenesysSimulator, int]]:
    promtool = require("promtool")
    require("prometheus")  # skips (or fails) before the backfill's work, not after it
    tmp: Path = tmp_path_factory.mktemp("exact-range-panels")

    async def backfill() -> tuple[GenesysSimulator, int]:
        clock = FakeClock(NOW)
        demo = Demo(clock)
        try:
            config = only(await demo.start(), SOURCE)
            run = Backfill(
                config,
                FROM,
                TO,
                tmp / "history.om",
                StateStore(tmp / "data"),
                clock=clock,
                progress_stream=io.StringIO(),
            )
            assert await run.run() == 0
        finally:
            await demo.stop()
        genesys = demo.simulators["genesys"]
        assert isinstance(genesys, GenesysSimulator)
        return genesys, counter_lag(config.sources[0])

    genesys, lag = asyncio.run(backfill())
    (tmp / "lag.om").write_text(lag_gauge(lag))
    for name in ("history.om", "lag.om"):
        done = subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", str(tmp / name), str(tmp / "tsdb")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    config = "global:\n  scrape_interval: 1m\n"
    with PrometheusServer(tmp, config, storage=tmp / "tsdb", args=["--storage.tsdb.retention.time=100y"]) as running:
        history = History(running.url)
        yield history, genesys, lag
        history.http.close()


def panel(title: str) -> q.Query:
    (query,) = (x for x in q.dashboard_queries() if x.board == DASHBOARD_OVERVIEW and x.title == title)
    return query


def run_panel(prom: History, title: str, start: int, end: int) -> list[dict[str, Any]]:
    """The panel's query as Grafana sends it for the dashboard range [start, end), in each row of its
    repeated row (one per lag value), at `end`."""
    board = q.dashboard(DASHBOARD_OVERVIEW)
    (lag_variable,) = (v for v in board["templating"]["list"] if v["name"] == "lag")
    resolve = prom.resolver(end)
    values = q.variable_values(board, resolve, time_range=(start, end))
    lags = q.variable_regex(lag_variable["regex"], resolve(q.substitute(lag_variable["definition"], values)))
    assert lags, f"no lag for a range ending {end}"
    out = []
    for lag in lags:
        expr = panel(title).promql(resolve, {"lag": lag, **q.time_range_values(start, end)})
        out += prom.query(expr, end)
    return out


def by(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    assert {r["metric"]["source"] for r in result} <= {SOURCE}
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}


@pytest.mark.parametrize("what", RANGES)
def test_exact_range_panels_equal_the_provider_s_truth(
    history: tuple[History, GenesysSimulator, int], what: str
) -> None:
    prom, genesys, _ = history
    start, end = RANGES[what]
    truth = genesys.truth(start, end, list(GROUP_BY), as_of=NOW)
    for label in GROUP_BY:
        handled: dict[str, int] = defaultdict(int)
        handle: dict[str, float] = defaultdict(float)
        for labels, t in truth.items():
            handled[dict(labels)[label]] += t.contacts_handled
            handle[dict(labels)[label]] += t.handle_seconds
        assert sum(handled.values()) > 0, f"{what}: the simulator handled nothing: a test without a subject"
        aht = {k: handle[k] / n for k, n in handled.items() if n}
        got = by(run_panel(prom, f"AHT by {label.replace('_', ' ')} over the time range", start, end), label)
        assert got == pytest.approx(aht, abs=0.001), f"{what}: AHT by {label}"  # to the millisecond
        if label == "queue":
            contacts = by(run_panel(prom, "Contacts handled by queue over the time range", start, end), label)
            assert {k: v for k, v in contacts.items() if v} == {k: float(n) for k, n in handled.items() if n}, what


def test_the_lag_variable_finds_the_lag_ahead_of_a_backfilled_range(
    history: tuple[History, GenesysSimulator, int],
) -> None:
    """The backfilled range ends before the exporter ran: no gauge there, so the variable looks ahead."""
    prom, _, lag = history
    board = q.dashboard(DASHBOARD_OVERVIEW)
    (lag_variable,) = (v for v in board["templating"]["list"] if v["name"] == "lag")
    end = FROM + DAY
    assert prom.query("aht_exporter_totals_lag_seconds", end) == []
    values = q.variable_values(board, prom.resolver(end), time_range=(FROM, end))
    assert values["lag"] == f"({lag})"  # the one value; the row repeats once
    # More than the look-ahead before the exporter ran: nothing to read the counters with, so no row.
    too_old = NOW - 40 * DAY
    assert prom.resolver(too_old)(q.substitute(lag_variable["definition"], values)) == []
