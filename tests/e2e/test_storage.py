"""State that survives restarts, in the real process (issue 14): `backfill`, then the exporter on the same store,
killed with SIGKILL in the middle of a poll and started again.

The Genesys simulator runs in the test, so its ground truth and the spans asked of it are known; the exporter
runs as `python -m aht_exporter` with `--storage.path`. The source polls every 6 hours: after the first poll at
start nothing moves, and the counters say exactly what the store gave back. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from aht_exporter.clock import SystemClock
from aht_exporter.simulator.demo import Demo
from aht_exporter.simulator.faults import Fault
from aht_exporter.simulator.genesys import GenesysSimulator
from aht_exporter.timebuckets import floor_to, isoformat_z
from tests.e2e.fleet import start_fleet
from tests.e2e.test_reload import WAIT, Running, raw, until, write
from tests.helpers import Series, samples

HOUR = 3600
REFRESH = 2 * HOUR  # Genesys' default refresh, cut to no window: demo-genesys keeps 1d
GROUP_BY = ["media_type", "queue"]


@pytest_asyncio.fixture
async def fleet() -> AsyncIterator[Demo]:
    demo = await start_fleet(SystemClock())
    yield demo
    await demo.stop()


async def start(config: Path, storage: Path) -> Running:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aht_exporter",
        "--web.listen-address=127.0.0.1:0",
        f"--config.file={config}",
        f"--storage.path={storage}",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Running(proc)
    _, listening = await running.line(r"msg=listening")
    address = listening.split("address=")[1].split()[0]
    running.client.base_url = f"http://{address}"
    return running


async def kill(running: Running) -> None:
    """SIGKILL: no shutdown, no last write."""
    running.proc.send_signal(signal.SIGKILL)
    assert await asyncio.wait_for(running.proc.wait(), WAIT) == -signal.SIGKILL
    await running.client.aclose()


def handled(series: Series) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple((k, v) for k, v in labels if k in GROUP_BY): value
        for labels, value in samples(series, "aht_contacts_handled_total", source="demo-genesys").items()
    }


def truth(genesys: GenesysSimulator, start: int, end: int) -> dict[tuple[tuple[str, str], ...], float]:
    return {k: float(t.contacts_handled) for k, t in genesys.truth(start, end, GROUP_BY).items() if t.contacts_handled}


@pytest.mark.asyncio
async def test_backfill_then_restarts_and_a_kill_mid_poll_keep_the_counters_exact(fleet: Demo, tmp_path: Path) -> None:
    genesys = fleet.simulators["genesys"]
    assert isinstance(genesys, GenesysSimulator)
    config = write(tmp_path / "config.yaml", raw(fleet, "demo-genesys"))
    storage = tmp_path / "data"
    # On the 6-hour grid the counters move on, and final: at or before the newest boundary a poll every 6 hours
    # has passed, less refresh (whatever the time of day the test runs).
    to = floor_to(floor_to(time.time() - 60, 6 * HOUR) - REFRESH, 6 * HOUR)
    start_at = to - 6 * HOUR

    # 1. History, through the command line, into the store.
    backfill = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aht_exporter",
        "backfill",
        f"--config.file={config}",
        f"--from={isoformat_z(start_at)}",
        f"--to={isoformat_z(to)}",
        f"--output={tmp_path / 'history.om'}",
        f"--storage.path={storage}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(backfill.communicate(), WAIT)
    assert backfill.returncode == 0, out.decode()
    assert "wrote" in out.decode() and (tmp_path / "history.om").stat().st_size > 0

    # 2. The exporter continues from the backfilled counters, and its first poll asks only for what is missing.
    running = await start(config, storage)
    await running.line(r'msg="state restored" source=demo-genesys fetched_until=' + isoformat_z(to))
    _, ok = await running.line(r'msg="poll ok" source=demo-genesys')
    series = await running.scrape(lambda s: bool(handled(s)))
    (data_end,) = samples(series, "aht_exporter_data_end_timestamp_seconds", source="demo-genesys").values()
    assert f"span={(int(data_end) - to) // 60}m " in ok  # from `to`, not the whole day a fresh start asks for
    frontier = int(data_end) - REFRESH
    assert handled(series) == truth(genesys, start_at, frontier)
    assert samples(series, "aht_exporter_buckets_unrecovered_total", source="demo-genesys") == {
        (("provider", "genesys"), ("source", "demo-genesys")): 0.0
    }

    # 3. Killed in the middle of its first poll (the vendor hangs): nothing half-written, nothing lost.
    await kill(running)
    genesys.faults.inject(Fault.SLOW, seconds=60)
    running = await start(config, storage)
    await running.line(r'msg="state restored" source=demo-genesys')
    # Killed while the poll is in flight: once the vendor holds its request, not after a guessed time.
    await until(lambda: bool(genesys.faults.injected[Fault.SLOW]), "the poll's request reached the vendor")
    await kill(running)
    genesys.faults.clear()

    # 4. Started again: the counters are still the ground truth, neither reset nor counted twice.
    running = await start(config, storage)
    try:
        _, ok = await running.line(r'msg="poll ok" source=demo-genesys')
        series = await running.scrape(lambda s: bool(handled(s)))
        (data_end,) = samples(series, "aht_exporter_data_end_timestamp_seconds", source="demo-genesys").values()
        assert handled(series) == truth(genesys, start_at, int(data_end) - REFRESH)
        assert "span=1440m" not in ok
    finally:
        assert await running.stop() == 0, running.log
    assert "Traceback" not in running.log


@pytest.mark.asyncio
async def test_a_store_that_cannot_be_used_is_one_line_and_the_exporter_serves_from_memory(
    fleet: Demo, tmp_path: Path
) -> None:
    config = write(tmp_path / "config.yaml", raw(fleet, "demo-genesys"))
    storage = tmp_path / "data"
    storage.mkdir()
    (storage / "aht-exporter.db").write_bytes(b"this is not a database, and never was" * 100)
    running = await start(config, storage)
    try:
        await running.line(r'msg="poll ok" source=demo-genesys')
        # The poll logs before it renders: wait for the render that shows it.
        series = await running.scrape(
            lambda s: list(samples(s, "aht_exporter_source_up", source="demo-genesys").values()) == [1.0]
        )
        assert samples(series, "aht_exporter_storage_errors_total") == {(): 1.0}
        assert samples(series, "aht_exporter_source_up", source="demo-genesys") == {
            (("provider", "genesys"), ("source", "demo-genesys")): 1.0
        }
    finally:
        assert await running.stop() == 0, running.log
    errors = [line for line in running.lines if "level=error" in line]
    assert len(errors) == 1, running.log
    assert 'msg="cannot open the store: polling and serving go on from memory"' in errors[0]
    assert str(storage / "aht-exporter.db") in errors[0]
