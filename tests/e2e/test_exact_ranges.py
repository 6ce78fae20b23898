"""Exact AHT over any range, on a real Prometheus (issue 14, docs/exact-ranges.md).

A simulated week of history goes through `aht-exporter backfill`, then a simulated day of live polls through
the exporter itself, restarted from its store halfway (all on a virtual clock shared with the simulators). The
live counters are sampled as a scrape would have, at the instants the backfill samples. `promtool tsdb
create-blocks-from openmetrics` makes blocks of both; a real Prometheus opens them, and the PromQL of
docs/exact-ranges.md, for an hour, a day, a range across the hand-over from backfill to live, and a range with
the restart inside, equals the simulator's ground truth to the millisecond and to the contact.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import httpx
import pytest

from aht_exporter.backfill import Backfill, counter_lag, parse_when
from aht_exporter.clock import FakeClock
from aht_exporter.config import Config
from aht_exporter.scheduler import Exporter
from aht_exporter.simulator.demo import Demo
from aht_exporter.simulator.genesys import GenesysSimulator
from aht_exporter.state import StateStore
from aht_exporter.store import Snapshot
from tests.prometheus_bin import PrometheusServer, require

HOUR, DAY = 3600, 86400
FROM = parse_when("2026-11-02", "--from")
TO = parse_when("2026-11-09", "--to")  # a week of history
LIVE_UNTIL = TO + DAY  # then a day of live polls
RESTART_AT = TO + 14 * HOUR
NOW = TO + 3 * HOUR  # when the backfill runs: `to` is final by then
SOURCE = "demo-genesys"
GROUP_BY = ("media_type", "queue")


def only(config: Config, name: str) -> Config:
    return Config(sources=[s for s in config.sources if s.name == name], path=config.path)


def om_lines(snapshot: Snapshot, at: int) -> list[str]:
    """The counters of one poll's snapshot, as the backfill writes them, sampled at `at`."""
    snapshot = snapshot.in_seconds()  # a store's snapshot is in millionths (Snapshot.scale)
    out = []
    for labels, totals in snapshot.totals.items():
        text = ",".join(
            f'{k}="{v}"' for k, v in sorted({"source": SOURCE, "provider": "genesys", **dict(labels)}.items())
        )
        for f in sorted(snapshot.fields):
            out.append(f"aht_{f}_total{{{text}}} {totals[f]!r} {at}\n")
    return out


async def live_day(demo: Demo, config: Config, clock: FakeClock, storage: Path) -> str:
    """Poll every 5 minutes from NOW to LIVE_UNTIL as the scheduler would, with a restart from the store at
    RESTART_AT, and return the counters as OpenMetrics samples at the instants a scrape would have seen them."""
    source = config.sources[0]
    every, delay = source.every.seconds, source.delay.seconds
    lines: list[str] = []
    exporter = Exporter(config, clock=clock, state=StateStore(storage))
    poll = NOW - NOW % every
    restarted = False
    try:
        while poll < LIVE_UNTIL:
            if poll >= RESTART_AT and not restarted:
                await exporter.aclose()  # the store has what the last poll saved, and the new one starts from it
                exporter = Exporter(config, clock=clock, state=StateStore(storage))
                # restored, not started afresh
                assert getattr(exporter.runners[0].store, "final_until", None) is not None
                restarted = True
            clock.set(poll + delay + 5)
            assert await exporter.poll_all()
            snapshot = exporter.runners[0].snapshot
            assert snapshot is not None
            lines += om_lines(snapshot, poll + every + delay - 30)  # just before the next poll: counter_lag
            poll += every
    finally:
        await exporter.aclose()
    by_family: dict[str, list[str]] = {}
    for line in lines:
        by_family.setdefault(line.split("{", 1)[0], []).append(line)
    body = []
    for family, samples in sorted(by_family.items()):
        body.append(
            f"# HELP {family.removesuffix('_total')} live counters\n# TYPE {family.removesuffix('_total')} counter\n"
        )
        body += sorted(samples, key=lambda s: (s.split("}")[0], int(s.split()[-1])))
    return "".join(body) + "# EOF\n"


async def query(api: str, promql: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Asked of a ready Prometheus (it has opened the blocks): one answer, no retries."""
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        r = await client.get("/api/v1/query", params={"query": promql, "time": str(LIVE_UNTIL + 7 * DAY)})
    body = r.json()
    assert body["status"] == "success", body
    return {
        tuple(sorted((k, v) for k, v in item["metric"].items() if k in GROUP_BY)): float(item["value"][1])
        for item in body["data"]["result"]
    }


def exact(metric: str, a: int, b: int, lag: int) -> str:
    """docs/exact-ranges.md, as written there."""
    at_b = f'sum by (media_type, queue) ({metric}{{source="{SOURCE}"}} @ {b} offset -{lag}s)'
    at_a = f'sum by (media_type, queue) ({metric}{{source="{SOURCE}"}} @ {a} offset -{lag}s)'
    return f"{at_b} - ({at_a} or {at_b} * 0)"


@pytest.mark.asyncio
async def test_the_documented_promql_is_exact_over_backfilled_and_live_ranges_and_a_restart(tmp_path: Path) -> None:
    promtool = require("promtool")
    require("prometheus")  # skips (or fails) before the backfill's work, not after it
    clock = FakeClock(NOW)
    demo = Demo(clock)
    config = only(await demo.start(), SOURCE)
    genesys = demo.simulators["genesys"]
    assert isinstance(genesys, GenesysSimulator)
    storage = tmp_path / "data"
    try:
        backfill = Backfill(
            config, FROM, TO, tmp_path / "history.om", StateStore(storage), clock=clock, progress_stream=io.StringIO()
        )
        assert await backfill.run() == 0
        (tmp_path / "live.om").write_text(await live_day(demo, config, clock, storage))
    finally:
        await demo.stop()
    blocks = tmp_path / "tsdb"
    for name in ("history.om", "live.om"):
        create = await asyncio.create_subprocess_exec(
            promtool,
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            str(tmp_path / name),
            str(blocks),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(create.communicate(), 300)
        assert create.returncode == 0, out.decode()
    lag = counter_lag(config.sources[0])
    over_blocks = PrometheusServer(
        tmp_path, "global:\n  scrape_interval: 1m\n", storage=blocks, args=["--storage.tsdb.retention.time=100y"]
    )
    async with over_blocks:
        api = over_blocks.url
        ranges = {
            "an hour": (FROM + 30 * HOUR, FROM + 31 * HOUR),
            "a day": (FROM + 2 * DAY, FROM + 3 * DAY),
            "the whole week": (FROM, TO),
            "across the hand-over to live": (TO - 5 * HOUR, TO + 5 * HOUR),
            "with the restart inside": (RESTART_AT - 3 * HOUR, RESTART_AT + 5 * HOUR),
        }
        for what, (a, b) in ranges.items():
            truth = genesys.truth(a, b, list(GROUP_BY), as_of=LIVE_UNTIL + DAY)
            handled = await query(api, exact("aht_contacts_handled_total", a, b, lag))
            handle = await query(api, exact("aht_handle_time_seconds_total", a, b, lag))
            assert {k: v for k, v in handled.items() if v} == {
                k: float(t.contacts_handled) for k, t in truth.items() if t.contacts_handled
            }, what
            assert {k: round(v * 1000) for k, v in handle.items() if v} == {
                k: round(t.handle_seconds * 1000) for k, t in truth.items() if t.handle_seconds
            }, what
