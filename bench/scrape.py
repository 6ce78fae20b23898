"""Scrape cost: our cached /metrics against prometheus_client's stock server, same series, one run.

    python bench/scrape.py [--series 10000] [--requests 300] [--concurrency 1]

Prints requests/s, p50 and p99 for both servers and the ratio. Loopback only; bounded request count.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Awaitable, Callable

import httpx
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from aht_exporter.config import build_config
from aht_exporter.exposition import SourceView, render
from aht_exporter.health import SourceHealth
from aht_exporter.model import Field, make_labels
from aht_exporter.scheduler import Exporter
from aht_exporter.server import start_server
from aht_exporter.store import Snapshot

FIELDS = frozenset({Field.HANDLE_TIME, Field.CONTACTS_HANDLED, Field.TALK_TIME, Field.HOLD_TIME, Field.ACW_TIME})
WINDOWS = ("30m", "1h")


def snapshot(series: int) -> Snapshot:
    """About `series` data series: agents x windows x (5 fields + aht)."""
    agents = max(1, series // (len(WINDOWS) * (len(FIELDS) + 1)))
    totals = {
        Field.HANDLE_TIME: 1234.5,
        Field.CONTACTS_HANDLED: 4,
        Field.TALK_TIME: 1000.0,
        Field.HOLD_TIME: 34.5,
        Field.ACW_TIME: 200.0,
    }
    groups = {make_labels(agent=f"agent-{i:06d}"): totals for i in range(agents)}
    return Snapshot(data_end=0, fields=FIELDS, windows={w: groups for w in WINDOWS})


def stock_registry(snap: Snapshot) -> CollectorRegistry:
    registry = CollectorRegistry()
    gauges = {
        f: Gauge(f"aht_{f.value}", "x", ["source", "provider", "window", "agent"], registry=registry) for f in FIELDS
    }
    aht = Gauge("aht_seconds", "x", ["source", "provider", "window", "agent"], registry=registry)
    for window, groups in snap.windows.items():
        for labels, totals in groups.items():
            agent = dict(labels)["agent"]
            for f in FIELDS:
                gauges[f].labels("bench", "genesys", window, agent).set(totals[f])
            aht.labels("bench", "genesys", window, agent).set(
                totals[Field.HANDLE_TIME] / totals[Field.CONTACTS_HANDLED]
            )
    return registry


async def hammer(url: str, requests: int, concurrency: int, gzip: bool) -> list[float]:
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    latencies: list[float] = []
    per_worker = requests // concurrency

    async def worker(client: httpx.AsyncClient) -> None:
        for _ in range(per_worker):
            t = time.perf_counter()
            r = await client.get(url, headers=headers)
            r.raise_for_status()
            latencies.append(time.perf_counter() - t)

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies


def summary(name: str, latencies: list[float], wall: float) -> tuple[float, str]:
    rps = len(latencies) / wall
    q = statistics.quantiles(latencies, n=100)
    return rps, f"{name:<8} {rps:10.1f} req/s   p50 {q[49] * 1000:8.2f} ms   p99 {q[98] * 1000:8.2f} ms"


async def measure(url: str, args: argparse.Namespace) -> tuple[list[float], float]:
    t = time.perf_counter()
    lat = await hammer(url, args.requests, args.concurrency, args.gzip)
    return lat, time.perf_counter() - t


async def main(args: argparse.Namespace) -> None:
    snap = snapshot(args.series)
    config = build_config(
        {
            "sources": [
                {
                    "name": "bench",
                    "provider": "genesys",
                    "region": "mypurecloud.com",
                    "client_id": "x",
                    "client_secret": "y",
                }
            ]
        },
        "bench",
        {},
    )
    exporter = Exporter(config)
    health = SourceHealth("bench", "genesys", 3, up=True, polled=True)
    t = time.perf_counter()
    exporter.rendered = render([SourceView(health, snap)])
    render_s = time.perf_counter() - t
    runner, bound = await start_server(exporter, "127.0.0.1:0")

    registry = stock_registry(snap)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    stock_url = f"http://127.0.0.1:{server.server_port}/metrics"

    run: Callable[[str], Awaitable[tuple[list[float], float]]] = lambda u: measure(u, args)  # noqa: E731
    ours, ours_wall = await run(f"http://{bound[0]}/metrics")
    stock_args = argparse.Namespace(**{**vars(args), "requests": max(args.concurrency, args.requests // 10)})
    stock, stock_wall = await measure(stock_url, stock_args)

    print(
        f"series={snap.series} concurrency={args.concurrency} gzip={args.gzip} render={render_s * 1000:.0f} ms "
        f"body={len(exporter.rendered.text)} bytes"
    )
    ours_rps, line = summary("ours", ours, ours_wall)
    print(line)
    stock_rps, line = summary("stock", stock, stock_wall)
    print(line)
    print(f"ratio    {ours_rps / stock_rps:10.1f}x")
    server.shutdown()
    thread.join(timeout=5)
    await runner.cleanup()
    await exporter.aclose()
    assert threading.active_count() >= 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--series", type=int, default=10000)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--gzip", action="store_true")
    asyncio.run(main(p.parse_args()))
