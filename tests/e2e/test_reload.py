"""Config reload in the real process (issue 15): SIGHUP and POST /-/reload against the built-in simulators.

The exporter runs as `python -m aht_exporter` on an ephemeral loopback port; its config points at the
demo's simulators, which run in the test. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml

from aht_exporter.clock import SystemClock
from aht_exporter.simulator.demo import Demo
from aht_exporter.simulator.faults import Fault
from tests.e2e.fleet import start_fleet
from tests.helpers import Series, parse_exposition, samples

WAIT = 60.0  # seconds any one thing the process does may take before the test fails


class Running:
    """The exporter process: its log lines as they come, and an HTTP client on its address."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._new = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self.client = httpx.AsyncClient(timeout=WAIT)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.lines.append(line.decode())
            self._new.set()
        self._new.set()

    async def line(self, pattern: str, start: int = 0) -> tuple[int, str]:
        """The first log line from index `start` on that matches `pattern`, and its index."""
        regex = re.compile(pattern)
        async with asyncio.timeout(WAIT):
            at = start
            while True:
                for i in range(at, len(self.lines)):
                    if regex.search(self.lines[i]):
                        return i, self.lines[i]
                at = len(self.lines)
                if self._reader.done():
                    raise AssertionError(f"exited before logging {pattern!r}:\n{self.log}")
                self._new.clear()
                await self._new.wait()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    async def scrape(self, ready: Callable[[Series], bool] = lambda _: True) -> Series:
        """/metrics, once `ready` says it shows what the test waits for: a poll logs before it renders."""
        deadline = time.monotonic() + WAIT
        while True:
            r = await self.client.get("/metrics")
            assert r.status_code == 200
            series = parse_exposition(r.text)
            if ready(series):
                return series
            if time.monotonic() > deadline:
                raise AssertionError(f"/metrics not as expected within {WAIT}s:\n{r.text}")
            await asyncio.sleep(0.05)

    def hangup(self) -> int:
        """SIGHUP; returns the index of the next log line."""
        mark = len(self.lines)
        self.proc.send_signal(signal.SIGHUP)
        return mark

    async def stop(self) -> int:
        await self.client.aclose()
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), WAIT)
        await asyncio.wait_for(self._reader, WAIT)
        return code


@contextlib.asynccontextmanager
async def exporter(*args: str) -> AsyncIterator[Running]:
    """The exporter with `args`, its store in memory: the default, data/ in the working directory, would
    carry one test's counters into the next."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aht_exporter",
        "--web.listen-address=127.0.0.1:0",
        "--storage.path=",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Running(proc)
    try:
        _, listening = await running.line(r"msg=listening")
        address = re.search(r"address=(\S+)", listening)
        assert address is not None, listening
        running.client.base_url = httpx.URL(f"http://{address.group(1)}")
        yield running
    finally:
        code = await running.stop()
        assert code == 0, running.log
        assert "Traceback" not in running.log, running.log


@pytest_asyncio.fixture
async def fleet() -> AsyncIterator[Demo]:
    demo = await start_fleet(SystemClock())
    yield demo
    await demo.stop()


def raw(demo: Demo, name: str, **changes: Any) -> dict[str, Any]:
    (source,) = [s for s in demo.sources if s["name"] == name]
    return {**source, **changes}


def write(path: Path, *sources: dict[str, Any]) -> Path:
    # Every 6 hours (at 00:01, 06:01... UTC) after the first poll at start: no scheduled poll falls inside a
    # test, whose counters then say exactly what the reload did (LivePerson allows no longer a cadence).
    path.write_text(yaml.safe_dump({"defaults": {"every": "6h", "delay": "1m"}, "sources": list(sources)}))
    return path


def value(series: Series, name: str, **labels: str) -> float:
    (found,) = samples(series, name, **labels).values()
    return found


def has(name: str, **labels: str) -> Callable[[Series], bool]:
    """A `scrape` condition: a sample of `name` with `labels` is there, and is not 0."""
    return lambda series: any(samples(series, name, **labels).values())


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT}s: {what}")
        await asyncio.sleep(0.05)


def sources_in(series: Series) -> set[str]:
    return {dict(labels)["source"] for (_, labels) in series if "source" in dict(labels)}


@pytest.mark.asyncio
async def test_sighup_keeps_restarts_adds_and_removes_sources(fleet: Demo, tmp_path: Path) -> None:
    config = write(
        tmp_path / "config.yaml",
        raw(fleet, "demo-genesys"),
        raw(fleet, "demo-koreai"),
        raw(fleet, "demo-liveperson"),
    )
    async with exporter(f"--config.file={config}") as running:
        before = await running.scrape(
            lambda series: all(
                has("aht_exporter_polls_total", source=name, result="success")(series)
                for name in ("demo-genesys", "demo-koreai", "demo-liveperson")
            )
        )
        loaded_at = value(before, "aht_exporter_config_last_reload_success_timestamp_seconds")
        assert value(before, "aht_exporter_config_last_reload_successful") == 1.0
        genesys_polls = value(before, "aht_exporter_polls_total", source="demo-genesys", result="success")
        genesys_requests = sum(samples(before, "aht_exporter_api_requests_total", source="demo-genesys").values())
        assert genesys_polls == 1.0 and genesys_requests >= 2  # a token and a query, at least
        assert samples(before, "aht_handle_time_seconds", source="demo-liveperson")

        write(
            config,
            raw(fleet, "demo-ozonetel"),
            raw(fleet, "demo-genesys"),
            raw(fleet, "demo-koreai", windows=["15m", "1h"]),
        )
        mark = running.hangup()
        _, line = await running.line(r'msg="config reloaded"', mark)
        assert f"file={config} kept=1 restarted=1 added=1 removed=1" in line
        assert "restarted_sources=demo-koreai added_sources=demo-ozonetel removed_sources=demo-liveperson" in line
        after = await running.scrape(
            lambda series: (
                has("aht_exporter_polls_total", source="demo-koreai", result="success")(series)
                and has("aht_exporter_polls_total", source="demo-ozonetel", result="success")(series)
                and "demo-liveperson" not in sources_in(series)
            )
        )
        # Kept: its counters go on from where they were, not polled again by the reload.
        assert value(after, "aht_exporter_polls_total", source="demo-genesys", result="success") == genesys_polls
        assert sum(samples(after, "aht_exporter_api_requests_total", source="demo-genesys").values()) == (
            genesys_requests
        )
        assert samples(after, "aht_handle_time_seconds", source="demo-genesys")
        # Restarted: a fresh source, with the new windows only.
        assert value(after, "aht_exporter_polls_total", source="demo-koreai", result="success") == 1.0
        assert {dict(k)["window"] for k in samples(after, "aht_handle_time_seconds", source="demo-koreai")} == {
            "15m",
            "1h",
        }
        # Added, and removed.
        assert value(after, "aht_exporter_source_up", source="demo-ozonetel") == 1.0
        assert sources_in(after) == {"demo-genesys", "demo-koreai", "demo-ozonetel"}
        assert value(after, "aht_exporter_config_last_reload_successful") == 1.0
        assert value(after, "aht_exporter_config_last_reload_success_timestamp_seconds") > loaded_at
        assert (await running.client.get("/-/ready")).status_code == 200
        assert running.log.count("config reload") == 1


@pytest.mark.asyncio
async def test_post_reload_refuses_an_invalid_config_and_the_old_one_keeps_serving(fleet: Demo, tmp_path: Path) -> None:
    config = write(tmp_path / "config.yaml", raw(fleet, "demo-genesys"))
    async with exporter(f"--config.file={config}", "--web.enable-lifecycle") as running:
        before = await running.scrape(has("aht_exporter_polls_total", source="demo-genesys", result="success"))
        loaded_at = value(before, "aht_exporter_config_last_reload_success_timestamp_seconds")

        write(config, raw(fleet, "demo-genesys", windows=["30m", "7m"]))
        mark = len(running.lines)
        r = await running.client.post("/-/reload")
        error = f"{config}: sources[0].windows[1]: 7m is not a multiple of the source's 30m bucket"
        assert (r.status_code, r.text) == (500, f"failed to reload config: {error}\n")
        _, line = await running.line(r"config reload failed", mark)
        assert line.rstrip("\n").endswith(
            f'level=error logger=aht_exporter msg="config reload failed: the running config is kept" error="{error}"'
        )
        after = await running.scrape(lambda series: not has("aht_exporter_config_last_reload_successful")(series))
        assert value(after, "aht_exporter_config_last_reload_successful") == 0.0
        assert value(after, "aht_exporter_config_last_reload_success_timestamp_seconds") == loaded_at
        assert value(after, "aht_exporter_source_up", source="demo-genesys") == 1.0
        assert samples(after, "aht_handle_time_seconds", source="demo-genesys", window="1d")  # the old windows

        # A config that is not even YAML, by SIGHUP this time: refused the same way.
        config.write_text("sources: [\n")
        mark = running.hangup()
        _, line = await running.line(r"config reload failed", mark)
        assert "YAML syntax error" in line

        write(config, raw(fleet, "demo-genesys"))
        r = await running.client.post("/-/reload")
        assert (r.status_code, r.text) == (200, "config reloaded: 1 kept, 0 restarted, 0 added, 0 removed\n")
        fixed = await running.scrape(has("aht_exporter_config_last_reload_successful"))
        assert value(fixed, "aht_exporter_config_last_reload_successful") == 1.0
        assert value(fixed, "aht_exporter_config_last_reload_success_timestamp_seconds") > loaded_at
        assert (await running.client.get("/-/reload")).status_code == 405
        assert len(re.findall(r"msg=\"config reload", running.log)) == 3  # one line per reload


@pytest.mark.asyncio
async def test_a_reload_while_polls_hang_cancels_the_changed_one_and_lets_the_kept_one_finish(
    fleet: Demo, tmp_path: Path
) -> None:
    genesys = fleet.simulators["genesys"].faults
    koreai = fleet.simulators["koreai"].faults
    genesys.inject(Fault.TIMEOUT)  # every data request hangs until cleared
    koreai.inject(Fault.TIMEOUT, 1)  # the first one hangs until the request's timeout, then the retry answers
    config = write(
        tmp_path / "config.yaml",
        raw(fleet, "demo-genesys", timeout="4m"),
        raw(fleet, "demo-koreai", timeout="8s"),
    )
    async with exporter(f"--config.file={config}") as running:
        await until(lambda: bool(genesys.injected[Fault.TIMEOUT] and koreai.injected[Fault.TIMEOUT]), "both hung")
        # Both first polls are in flight, each waiting on a request its simulator does not answer.
        genesys.clear()
        write(config, raw(fleet, "demo-genesys", timeout="30s"), raw(fleet, "demo-koreai", timeout="8s"))
        mark = running.hangup()
        # The hung poll was cancelled, not waited for: waited for, it would end on its 4m timeout, long
        # after `line` gives up (WAIT), and log its end before the reload's line.
        i, line = await running.line(r'msg="config reloaded"', mark)
        assert not [x for x in running.lines[mark:i] if 'msg="poll' in x and "source=demo-genesys" in x], running.log
        assert "kept=1 restarted=1 added=0 removed=0 restarted_sources=demo-genesys" in line
        await running.line(r'msg="poll ok" source=demo-genesys ', i)
        # The kept source's poll, in flight through the reload, ends as it would have without one.
        await running.line(r'msg="poll ok" source=demo-koreai ', mark)
        series = await running.scrape(
            lambda series: (
                has("aht_exporter_polls_total", source="demo-koreai", result="success")(series)
                and has("aht_exporter_polls_total", source="demo-genesys", result="success")(series)
            )
        )
        assert value(series, "aht_exporter_polls_total", source="demo-koreai", result="success") == 1.0
        assert value(series, "aht_exporter_polls_total", source="demo-koreai", result="error") == 0.0
        assert value(series, "aht_exporter_polls_total", source="demo-genesys", result="success") == 1.0
        assert value(series, "aht_exporter_polls_total", source="demo-genesys", result="error") == 0.0
        assert 'poll failed" source=demo-genesys' not in running.log  # cancelled: no failure to count
        assert "cancelled polls have not ended" not in running.log


@pytest.mark.asyncio
async def test_the_demo_has_nothing_to_reload_and_the_endpoint_is_off_without_the_flag() -> None:
    async with exporter("--demo") as running:
        await running.scrape(has("aht_exporter_source_up", source="demo-genesys"))
        r = await running.client.post("/-/reload")
        assert (r.status_code, r.text) == (403, "Lifecycle API is not enabled.\n")
        mark = running.hangup()
        await running.line(r'msg="config reload: nothing to reload: --demo has no config file"', mark)
        series = await running.scrape()
        assert value(series, "aht_exporter_config_last_reload_successful") == 1.0
        assert value(series, "aht_exporter_source_up", source="demo-genesys") == 1.0
        assert (await running.client.get("/-/reload")).status_code == 405
