"""SIGTERM: stop scheduling, let in-flight polls finish or cancel, exit 0 within 10 s."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import pytest


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aht_exporter",
        "--web.listen-address=127.0.0.1:0",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def read_until(proc: asyncio.subprocess.Process, needle: str, seen: list[str], limit: float = 60) -> None:
    assert proc.stderr is not None
    async with asyncio.timeout(limit):
        while True:
            line = (await proc.stderr.readline()).decode()
            assert line, f"process ended before logging {needle!r}: {''.join(seen)}"
            seen.append(line)
            if needle in line:
                return


async def stop(proc: asyncio.subprocess.Process, seen: list[str]) -> tuple[int, float]:
    assert proc.stderr is not None
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest = await asyncio.wait_for(proc.stderr.read(), timeout=15)
    seen.append(rest.decode())
    code = await asyncio.wait_for(proc.wait(), timeout=15)
    return code, time.monotonic() - started


@pytest.mark.asyncio
async def test_sigterm_after_polls_exits_0_at_once() -> None:
    proc = await start("--demo")
    seen: list[str] = []
    await read_until(proc, 'msg="poll ok" source=demo-genesys ', seen)
    code, took = await stop(proc, seen)
    log = "".join(seen)
    assert code == 0, log
    assert took < 5
    assert 'msg="shutting down"' in log and "Traceback" not in log


@pytest.mark.asyncio
async def test_a_hanging_provider_cannot_stall_shutdown(tmp_path: Path) -> None:
    connected = asyncio.Event()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()  # accept the request, never answer it
        await reader.read()
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = tmp_path / "config.yaml"
    config.write_text(
        "sources:\n  - {name: hang, provider: genesys, client_id: a, client_secret: b, timeout: 4m,"
        f" base_url: 'http://127.0.0.1:{port}', login_url: 'http://127.0.0.1:{port}'}}\n"
    )
    proc = await start(f"--config.file={config}", f"--storage.path={tmp_path / 'data'}")
    seen: list[str] = []
    await read_until(proc, "msg=listening", seen)
    await asyncio.wait_for(connected.wait(), timeout=30)  # the first poll is in flight
    code, took = await stop(proc, seen)
    server.close()
    log = "".join(seen)
    assert code == 0, log
    assert 8 <= took < 10, log  # the poll had its grace period, then was cancelled
    assert 'msg="polls still running at shutdown: cancelled" sources=hang' in log
    assert "Traceback" not in log


@pytest.mark.asyncio
async def test_sigterm_with_a_hanging_demo_simulator_exits_0_within_10s() -> None:
    # The genesys simulator never answers a data request: the poll is in flight at SIGTERM, and the
    # simulator itself still holds that request open when the demo stops it.
    proc = await start("--demo", "--demo.fault", "genesys:timeout")
    seen: list[str] = []
    await read_until(proc, 'msg="poll ok" source=demo-koreai', seen)
    await asyncio.sleep(0.5)  # the genesys poll is past its token, waiting on its first data request
    code, took = await stop(proc, seen)
    log = "".join(seen)
    assert code == 0, log
    assert took < 10, log
    assert "demo-genesys" in log.split('msg="polls still running at shutdown: cancelled"', 1)[1].splitlines()[0]
    assert "did not finish in time" not in log and "Traceback" not in log
