"""Peak memory of reading hostile replies through the exporter's HTTP client (issue 12, break 2).

    python bench/response_limits.py

A server on 127.0.0.1 (this process) serves each reply; a fresh client process reads it with an
ApiClient at the given `max_response_size` and reports its own peak RSS (getrusage's ru_maxrss), its
RSS before the request, what came of the request and how long it took. The replies:

- an endless 200 body (chunked, no length);
- a gzip bomb: about 4 MB on the wire, 4 GiB of zeros once inflated;
- a 200 MB body announced by its Content-Length, and the same without one (chunked);
- the 200 MB body again with the bound raised to 256MiB, to show that reading what is kept costs about
  what is kept.

No assertions: the figures are printed for a person (and the issue) to read.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
CHUNK = 64 << 10
MIB = 1 << 20
PLAIN_SIZE = 200 * 1000 * 1000  # "a plain 200 MB body"
BOMB_INFLATED = 4 << 30

CASES = (
    # name, path, max_response_size
    ("endless 200 body", "/endless", "64MiB"),
    ("gzip bomb, 4 GiB inflated", "/bomb", "64MiB"),
    ("200 MB body, Content-Length", "/plain?length=1", "64MiB"),
    ("200 MB body, chunked", "/plain", "64MiB"),
    ("200 MB body, bound raised to 256MiB", "/plain?length=1", "256MiB"),
)

CLIENT = r"""
import asyncio, json, resource, sys, time
from aht_exporter.config import ByteSize
from aht_exporter.health import SourceHealth
from aht_exporter.httpclient import ApiClient
from aht_exporter.model import ProviderError

def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

async def main(url: str, limit: str) -> None:
    api = ApiClient(counter=SourceHealth("bench", "genesys", 3), timeout=60)
    api.max_response_bytes = ByteSize.parse(limit).bytes
    before = rss_mib()
    started = time.perf_counter()
    try:
        response = await api.request("GET", url, endpoint="bench")
        outcome = f"read {len(response.content)} bytes"
        del response
    except ProviderError as exc:
        outcome = str(exc)
    seconds = time.perf_counter() - started
    await api.aclose()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"before": before, "peak": peak, "seconds": seconds, "outcome": outcome}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def _bomb_blocks() -> tuple[bytes, bytes]:
    """The gzip stream's first MiB of zeros, and the block every further MiB compresses to: once the
    window is all zeros, each sync-flushed MiB compresses to the same bytes, so the bomb costs nothing to
    make as it is sent."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MIB)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    again = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert block == again, "a MiB of zeros does not compress to a steady block"
    return first, block


async def _send(response: web.StreamResponse, chunks: Iterable[bytes]) -> web.StreamResponse:
    try:
        for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass  # the client stopped reading: what the bound is for
    return response


async def endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)

    def forever() -> Iterator[bytes]:
        chunk = b"x" * CHUNK
        while True:
            yield chunk

    return await _send(response, forever())


async def bomb(request: web.Request) -> web.StreamResponse:
    first, block = request.app["bomb"]
    response = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    blocks = BOMB_INFLATED // MIB
    return await _send(response, [first, *([block] * (blocks - 1))])


async def plain(request: web.Request) -> web.StreamResponse:
    headers = {"Content-Type": "application/json"}
    if request.query.get("length"):
        headers["Content-Length"] = str(PLAIN_SIZE)
    response = web.StreamResponse(headers=headers)
    if "Content-Length" not in headers:
        response.enable_chunked_encoding()
    await response.prepare(request)
    chunk = b"7" * CHUNK
    full, rest = divmod(PLAIN_SIZE, CHUNK)
    return await _send(response, [*([chunk] * full), chunk[:rest]])


async def serve() -> tuple[web.AppRunner, str]:
    app = web.Application()
    app["bomb"] = _bomb_blocks()
    app.router.add_get("/endless", endless)
    app.router.add_get("/bomb", bomb)
    app.router.add_get("/plain", plain)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def main() -> None:
    runner, base = await serve()
    first, block = _bomb_blocks()
    wire = len(first) + len(block) * (BOMB_INFLATED // MIB - 1)
    print(f"gzip bomb: {wire / 1e6:.1f} MB on the wire, {BOMB_INFLATED / 2**30:.0f} GiB inflated")
    print(f"{'reply':38} {'bound':>7} {'RSS before':>11} {'peak RSS':>9} {'time':>7}  outcome")
    try:
        for name, path, limit in CASES:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CLIENT, base + path, limit, cwd=REPO, stdout=subprocess.PIPE
            )
            started = time.perf_counter()
            out, _ = await child.communicate()
            if child.returncode != 0:
                took = time.perf_counter() - started
                print(f"{name:38} {limit:>7}  client failed ({child.returncode}) after {took:.1f}s")
                continue
            row = json.loads(out)
            print(
                f"{name:38} {limit:>7} {row['before']:>8.0f} MiB {row['peak']:>5.0f} MiB {row['seconds']:>6.2f}s"
                f"  {row['outcome']}"
            )
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
