"""What the per-scrape tail (process_* and python_gc_*, issue 15) adds to each scrape, at 100k series.

    python bench/scrape_tail.py [--series 100000] [--calls 2000] [--scrapes 300]

- In process: `Rendered.body()` for each of the four bodies, call after call (median and p99): the whole
  of what a scrape does beyond writing bytes. Then its steps one by one: reading the collectors (/proc
  and the garbage collector), formatting the tail in each format, and finishing the gzip stream (compress
  the tail as the member's last block, its CRC-32 and the trailer). Beside them, for scale: finishing
  from a compressor that was not flushed at render (it would compress the end of the data part again at
  every scrape), and compressing the whole body again.
- Server CPU per scrape: the exporter's HTTP server in a process of its own, scraped `--scrapes` times one
  after another over loopback; its CPU time (/proc utime + stime) divided by the scrapes. Once as shipped,
  once serving bodies finished at render time with no per-scrape tail (as before issue 15). The client is
  Python, so the wall time per scrape is the client's as much as the server's: the CPU column is the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from common import Result, agent_snapshot, bench_env, ms
from isal import isal_zlib

if TYPE_CHECKING:
    from aht_exporter.exposition import Part, Rendered

SERIES = 100_000
PROMETHEUS = {"Accept": "application/openmetrics-text;version=1.0.0", "Accept-Encoding": "gzip"}
CURL = {"Accept-Encoding": "identity"}
BODIES = {
    "text": (False, False),
    "text gzip": (False, True),
    "OpenMetrics": (True, False),
    "OpenMetrics gzip": (True, True),
}


def _rendered(series: int) -> Rendered:
    from aht_exporter.exposition import SourceView, render
    from aht_exporter.health import SourceHealth

    health = SourceHealth("bench", "genesys", 3, up=True, polled=True)
    return render([SourceView(health, agent_snapshot(series))])


class Finished:
    """Bodies finished once, at render time, with no per-scrape tail: what a scrape cost before issue 15."""

    def __init__(self, rendered: Rendered) -> None:
        from aht_exporter.exposition import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE

        self._bodies: dict[tuple[bool, bool], tuple[tuple[Part, ...], str]] = {
            (om, gz): (
                (rendered.whole(openmetrics=om, gzipped=gz),),
                OPENMETRICS_CONTENT_TYPE if om else TEXT_CONTENT_TYPE,
            )
            for om in (False, True)
            for gz in (False, True)
        }

    def body(self, *, openmetrics: bool, gzipped: bool) -> tuple[tuple[Part, ...], str]:
        return self._bodies[(openmetrics, gzipped)]


async def serve(kind: str, series: int) -> None:
    from aht_exporter.registry import build_config
    from aht_exporter.scheduler import Exporter
    from aht_exporter.server import start_server

    source = {"name": "bench", "provider": "genesys", "region": "mypurecloud.com", "client_id": "x"}
    exporter = Exporter(build_config({"sources": [{**source, "client_secret": "y"}]}, "bench", {}))
    rendered = _rendered(series)
    # Finished stands in for Rendered: the server only calls body() on it.
    exporter.rendered = rendered if kind == "tail" else cast("Rendered", Finished(rendered))
    runner, bound = await start_server(exporter, "127.0.0.1:0")
    print(json.dumps({"url": f"http://{bound[0]}/metrics", "pid": os.getpid()}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()
    await exporter.aclose()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu_per_scrape(kind: str, series: int, scrapes: int, headers: dict[str, str]) -> tuple[float, float, int]:
    """(server CPU seconds per scrape, client wall seconds per scrape, body bytes)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), f"--serve={kind}", f"--series={series}"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=bench_env())
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        host, port = info["url"].removeprefix("http://").split("/")[0].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)

        def scrape() -> int:
            conn.request("GET", "/metrics", headers=headers)
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200
            return len(body)

        for _ in range(20):  # warm up: the connection, the allocator, the kernel's socket buffers
            size = scrape()
        before, started = cpu_seconds(info["pid"]), time.perf_counter()
        for _ in range(scrapes):
            scrape()
        wall = time.perf_counter() - started
        cpu = cpu_seconds(info["pid"]) - before
        conn.close()
        return cpu / scrapes, wall / scrapes, size
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def timed(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    """(median, p99) seconds of one call."""
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    q = statistics.quantiles(times, n=100, method="inclusive")
    return q[49], q[98]


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def main(args: argparse.Namespace) -> list[Result]:
    from aht_exporter.exposition import GZIP_LEVEL, ScrapeTail, Segment, joined

    command = " ".join(["python bench/scrape_tail.py", *sys.argv[1:]])
    rendered = _rendered(args.series)
    tail: ScrapeTail = rendered.tail
    steps = Result(
        title=f"Per-scrape work at {args.series:,} series, in process ({args.calls:,} calls each)",
        command=command,
        columns=["step", "median µs", "p99 µs", "bytes"],
    )
    for name, (om, gz) in BODIES.items():
        parts, _ = rendered.body(openmetrics=om, gzipped=gz)

        def body(om: bool = om, gz: bool = gz) -> tuple[tuple[Part, ...], str]:
            return rendered.body(openmetrics=om, gzipped=gz)

        median, p99 = timed(body, args.calls)
        steps.rows.append(
            [
                f"`Rendered.body()`, {name} (all of the below that it needs)",
                us(median),
                us(p99),
                f"{sum(p.size if isinstance(p, Segment) else len(p) for p in parts):,}",
            ]
        )
    median, p99 = timed(tail.collect, args.calls)
    steps.rows.append(["read the collectors (/proc, gc.get_stats)", us(median), us(p99), "-"])
    for om in (False, True):
        out = tail.render(openmetrics=om)

        def render_tail(om: bool = om) -> bytes:
            return tail.render(openmetrics=om)

        median, p99 = timed(render_tail, args.calls)
        steps.rows.append(
            [f"the tail, read and formatted, {'OpenMetrics' if om else 'text'}", us(median), us(p99), f"{len(out):,}"]
        )
    cached = rendered.openmetrics_format
    om_tail = tail.render(openmetrics=True)
    finished = cached.finish(om_tail, gzipped=True)[-1]
    assert isinstance(finished, bytes)
    median, p99 = timed(lambda: cached.finish(om_tail, gzipped=True), args.calls)
    steps.rows.append(
        [
            "finish the gzip stream: compress the tail as the last block, CRC-32 and trailer",
            us(median),
            us(p99),
            f"{len(finished):,}",
        ]
    )

    # For scale: the same data part compressed without the sync flush at its end, then finished per scrape.
    data = joined(cached.parts)
    # zlib's, at its own level 1: ISA-L's compressor cannot be copied.
    unsynced = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    unsynced.compress(data)

    def finish_unsynced() -> bytes:
        d = unsynced.copy()
        return d.compress(om_tail) + d.flush()

    median, p99 = timed(finish_unsynced, args.calls)
    steps.rows.append(
        ["(for scale) finishing without the sync flush at render", us(median), us(p99), f"{len(finish_unsynced()):,}"]
    )
    whole = data + om_tail
    median, p99 = timed(lambda: isal_zlib.compress(whole, GZIP_LEVEL, 31), max(3, args.calls // 200))
    steps.rows.append(
        [
            "(for scale) compressing the whole body again",
            us(median),
            us(p99),
            f"{len(isal_zlib.compress(whole, GZIP_LEVEL, 31)):,}",
        ]
    )

    steps.notes.append(
        "memory: a render keeps no compressor state: each source's lines are compressed on their own when its "
        "poll changes them, and a gzipped scrape compresses only its tail with a compressor of its own."
    )
    steps.notes.append(
        f"the data part is {len(data) / 2**20:,.1f} MiB (OpenMetrics, identity): a scrape copies none of it; the "
        "tail is its own part, written after the cached ones."
    )

    server = Result(
        title=f"Server CPU per scrape at {args.series:,} series: with the per-scrape tail and without",
        command=command,
        columns=["body", "server", "scrapes", "body KiB", "server CPU ms / scrape", "client wall ms / scrape"],
    )
    for label, headers in (("OpenMetrics gzip (Prometheus)", PROMETHEUS), ("text identity (curl)", CURL)):
        for kind, who in (
            ("finished", "bodies finished at render, no tail (before)"),
            ("tail", "per-scrape tail (now)"),
        ):
            cpu, wall, size = server_cpu_per_scrape(kind, args.series, args.scrapes, headers)
            server.rows.append([label, who, str(args.scrapes), f"{size / 1024:,.0f}", ms(cpu), ms(wall)])
    server.notes.append(
        "server CPU from /proc/<pid>/stat (10 ms ticks) over all the scrapes; one sequential keep-alive client. "
        "The two servers run one after the other, so the machine's load at each moment moves them a little."
    )
    return [steps, server]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--series", type=int, default=SERIES)
    p.add_argument("--calls", type=int, default=2000, help="in-process calls per step")
    p.add_argument("--scrapes", type=int, default=300, help="HTTP scrapes per server")
    p.add_argument("--serve", choices=["tail", "finished"], help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    arguments = parser().parse_args()
    if arguments.serve:
        asyncio.run(serve(arguments.serve, arguments.series))
    else:
        for result in main(arguments):
            print(result.text(), flush=True)
