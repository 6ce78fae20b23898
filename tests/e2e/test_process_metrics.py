"""The real exporter process (`--demo`) serves its own process_* and python_gc_* families, current at each
scrape, in every body; promtool accepts them and a real Prometheus ingests them."""

from __future__ import annotations

import asyncio
import gzip
import re
import socket
import sys
import time
import zlib
from asyncio.subprocess import DEVNULL, PIPE
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.e2e.test_prometheus import query, scraping
from tests.prometheus_bin import PrometheusServer, require

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
BOUND = 60.0  # seconds any single wait below may take


@dataclass
class Running:
    proc: asyncio.subprocess.Process
    url: str
    spawned: float  # Unix time just before the process was started
    log: list[str]


@pytest_asyncio.fixture
async def running() -> AsyncIterator[Running]:
    spawned = time.time()
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "aht_exporter", "--demo", "--web.listen-address=127.0.0.1:0"],
        stdin=DEVNULL,
        stdout=DEVNULL,
        stderr=PIPE,
    )
    assert proc.stderr is not None
    log: list[str] = []
    async with asyncio.timeout(BOUND):
        while not (match := re.search(r"msg=listening address=(127\.0\.0\.1:\d+)", log[-1] if log else "")):
            line = (await proc.stderr.readline()).decode()
            assert line, f"the exporter ended before listening: {''.join(log)}"
            log.append(line)

    async def drain() -> None:  # a full stderr pipe would stop the exporter at its next log line
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            log.append(line.decode())

    drainer = asyncio.create_task(drain())
    try:
        yield Running(proc, f"http://{match[1]}", spawned, log)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout=15)
        await asyncio.wait_for(drainer, timeout=15)


def values(body: str, *, openmetrics: bool) -> dict[str, float]:
    """{sample name: value} of the unlabelled samples, plus `type:NAME` for each counter family NAME."""
    parsed = list(parse_openmetrics(body) if openmetrics else parse_text(body))  # type: ignore[no-untyped-call]
    out = {s.name: s.value for f in parsed for s in f.samples if not s.labels}
    out.update({f"type:{f.name}": 0.0 for f in parsed if f.type == "counter"})
    return out


async def scrape(client: httpx.AsyncClient, *, openmetrics: bool, gzipped: bool) -> dict[str, float]:
    headers = {
        "Accept": OPENMETRICS if openmetrics else "text/plain",
        "Accept-Encoding": "gzip" if gzipped else "identity",
    }
    r = await client.get("/metrics", headers=headers)  # httpx decodes the gzip body itself
    assert r.status_code == 200
    assert (r.headers.get("Content-Encoding") == "gzip") is gzipped
    if openmetrics:
        assert r.text.endswith("# EOF\n") and r.text.count("# EOF") == 1
    return values(r.text, openmetrics=openmetrics)


@pytest.mark.asyncio
async def test_every_body_carries_the_exporter_s_own_process_metrics(running: Running) -> None:
    async with httpx.AsyncClient(base_url=running.url, timeout=BOUND) as client:
        for openmetrics in (False, True):
            for gzipped in (False, True):
                got = await scrape(client, openmetrics=openmetrics, gzipped=gzipped)
                assert "type:process_cpu_seconds" in got
                for name in ("process_resident_memory_bytes", "process_open_fds", "process_max_fds"):
                    assert got[name] > 0, name
                # The exporter's start, not the test's: this process began after `spawned`.
                assert running.spawned - 2 <= got["process_start_time_seconds"] <= time.time()
                assert "python_info" not in got


@pytest.mark.asyncio
async def test_the_gzip_body_is_one_stream_every_decoder_reads_whole(running: Running) -> None:
    async with httpx.AsyncClient(base_url=running.url, timeout=BOUND) as client:
        for accept in ("text/plain", OPENMETRICS):
            headers = {"Accept": accept, "Accept-Encoding": "gzip"}
            r = await client.send(client.build_request("GET", "/metrics", headers=headers), stream=True)
            raw = b"".join([chunk async for chunk in r.aiter_raw()])
            assert int(r.headers["Content-Length"]) == len(raw)
            one = zlib.decompressobj(16 + zlib.MAX_WBITS)
            body = one.decompress(raw)
            assert one.eof and one.unused_data == b""  # one member, nothing after it
            assert gzip.decompress(raw) == body
            assert b"\nprocess_cpu_seconds_total " in body and b"\npython_gc_collections_total{" in body
            if accept == OPENMETRICS:
                assert body.endswith(b"# EOF\n") and body.count(b"# EOF") == 1


@pytest.mark.asyncio
async def test_scrapes_without_a_poll_between_them_read_cpu_and_descriptors_as_they_are(running: Running) -> None:
    async with httpx.AsyncClient(base_url=running.url, timeout=BOUND) as client:
        first = await scrape(client, openmetrics=True, gzipped=True)
        # Every scrape costs the exporter some CPU: scrape until /proc (10 ms ticks) shows it, bounded.
        cpu = first["process_cpu_seconds_total"]
        for _ in range(5000):
            now = await scrape(client, openmetrics=True, gzipped=True)
            if now["process_cpu_seconds_total"] >= cpu + 0.05:
                break
        else:
            raise AssertionError("process_cpu_seconds_total did not grow over 5,000 scrapes")

        # Each connection the exporter accepts is a descriptor it holds (until its header timeout, 5 s).
        base = (await scrape(client, openmetrics=False, gzipped=False))["process_open_fds"]
        host, port = running.url.removeprefix("http://").split(":")
        socks = [socket.create_connection((host, int(port)), timeout=5) for _ in range(40)]
        try:
            for _ in range(200):  # the exporter accepts them as its loop gets to them
                held = (await scrape(client, openmetrics=False, gzipped=False))["process_open_fds"]
                if held >= base + 40:
                    break
            else:
                raise AssertionError(f"process_open_fds stayed near {base} with 40 more connections open")
        finally:
            for sock in socks:
                sock.close()
        for _ in range(2000):  # each scrape a round trip: the exporter sees the closes meanwhile
            if (await scrape(client, openmetrics=False, gzipped=True))["process_open_fds"] <= base + 5:
                break
        else:
            raise AssertionError(f"process_open_fds did not fall back to {base} once the connections closed")


@pytest.mark.asyncio
async def test_promtool_check_metrics_accepts_the_running_exporter_s_body(running: Running) -> None:
    promtool = require("promtool")
    async with httpx.AsyncClient(base_url=running.url, timeout=BOUND) as client:
        body = (await client.get("/metrics", headers={"Accept-Encoding": "gzip"})).content
    assert b"\nprocess_resident_memory_bytes " in body
    proc = await asyncio.create_subprocess_exec(promtool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=PIPE)
    out, err = await asyncio.wait_for(proc.communicate(body), timeout=BOUND)
    assert proc.returncode == 0, err.decode()
    assert out.strip() == b"" and err.strip() == b"", err.decode()


@pytest.mark.asyncio
async def test_a_real_prometheus_ingests_the_process_metrics(running: Running, tmp_path: Path) -> None:
    async with PrometheusServer(tmp_path, scraping(running.url.removeprefix("http://"))) as prometheus:
        api = prometheus.url
        (up,) = await query(api, 'up{job="aht"}')
        assert up["value"][1] == "1"
        for name in (
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "python_gc_collections_total",
        ):
            (sample,) = await query(api, f'{name}{{job="aht"}}' if "gc" not in name else f'{name}{{generation="0"}}')
            assert float(sample["value"][1]) > 0, name
        (start,) = await query(api, 'process_start_time_seconds{job="aht"}')
        assert running.spawned - 2 <= float(start["value"][1]) <= time.time()
        # Scraped once a second, OpenMetrics and gzipped: the stored samples move from scrape to scrape.
        (changes,) = await query(api, 'changes(process_cpu_seconds_total{job="aht"}[1m]) > 0')
        assert float(changes["value"][1]) >= 1
