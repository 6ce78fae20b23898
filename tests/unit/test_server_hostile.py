"""Clients that hold connections without using them: idle, trickling their headers, never reading the answer,
or simply too many. Each holds a descriptor; none may hold one for long, and none may keep a scraper out.

Real loopback connections to the real server; every wait is bounded, and the waits that stand for "the header
timeout has passed" wait for another connection to be closed by it, never for the clock."""

from __future__ import annotations

import asyncio
import resource
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import httpx
import pytest

from aht_exporter import connections
from aht_exporter.connections import GUARD_KEY, ConnectionGuard, connection_cap
from aht_exporter.exposition import Rendered
from aht_exporter.registry import build_config
from aht_exporter.scheduler import Exporter
from aht_exporter.server import start_server

SOURCE = {
    "name": "g1",
    "provider": "genesys",
    "base_url": "http://127.0.0.1:9",
    "login_url": "http://127.0.0.1:9",
    "client_id": "id",
    "client_secret": "s3cret-Value",
}
# Far more than the kernel buffers on both ends hold (a small receive buffer on the client, at most a few
# MB of send buffer on the server): a client that does not read keeps the server's write waiting.
BIG_BODY = b"# a /metrics body bigger than every buffer on the way\n" * (16 * 1024 * 1024 // 54)
BOUND = 15.0  # seconds any single wait below may take before the test fails


class BigBody:
    """Stands in for the exporter's rendered exposition (cast to Rendered: the server only calls body())."""

    def body(self, *, openmetrics: bool, gzipped: bool) -> tuple[tuple[bytes, ...], str]:
        return (BIG_BODY,), "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Served:
    exporter: Exporter
    guard: ConnectionGuard
    host: str
    port: int

    async def connect(self, *, small_receive_buffer: bool = False) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = socket.socket()
        if small_receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (self.host, self.port))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)


@asynccontextmanager
async def serve(**options: Any) -> AsyncIterator[Served]:
    exporter = Exporter(build_config({"sources": [SOURCE]}, "t", {}))
    runner, bound = await start_server(exporter, "127.0.0.1:0", **options)
    host, _, port = bound[0].rpartition(":")
    try:
        yield Served(exporter, runner.app[GUARD_KEY], host, int(port))
    finally:
        await runner.cleanup()
        await exporter.aclose()


async def until(condition: Any, what: str) -> None:
    """Wait, 10 ms at a time and at most BOUND seconds, for the server to get somewhere."""
    for _ in range(int(BOUND / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    assert condition(), what


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes the connection (a reset counts as closing it)."""
    chunks = []
    async with asyncio.timeout(BOUND):
        while True:
            try:
                chunk = await reader.read(1024 * 1024)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def close(*writers: asyncio.StreamWriter) -> None:
    for writer in writers:
        writer.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n"],
    ids=["nothing", "headers-without-their-end"],
)
async def test_a_connection_without_a_complete_request_is_closed_after_the_header_timeout(sent: bytes) -> None:
    async with serve(header_timeout=0.2) as served:
        reader, writer = await served.connect()
        writer.write(sent)
        assert await read_to_end(reader) == b""  # closed, and nothing answered
        close(writer)
        assert served.guard.timed_out == 1


@pytest.mark.asyncio
async def test_a_keep_alive_connection_gets_the_same_time_for_its_next_request() -> None:
    async with serve(header_timeout=0.2) as served:
        reader, writer = await served.connect()
        writer.write(b"GET /-/healthy HTTP/1.1\r\nHost: exporter\r\n\r\n")
        answer = await read_to_end(reader)  # the answer, then the end once the connection idled too long
        close(writer)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"Healthy.\n")
        assert served.guard.timed_out == 1


@pytest.mark.asyncio
async def test_headers_trickled_a_byte_at_a_time_do_not_extend_the_deadline() -> None:
    async with serve(header_timeout=0.2) as served:
        reader, writer = await served.connect()
        writer.write(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        closed = False
        for _ in range(int(BOUND / 0.05)):  # a byte every 50 ms, until the server has had enough
            try:
                closed = await asyncio.wait_for(reader.read(1), 0.05) == b""
            except TimeoutError:
                writer.write(b"a")
            except ConnectionResetError:
                closed = True
            if closed:
                break
        close(writer)
        assert closed
        assert served.guard.timed_out == 1


@pytest.mark.asyncio
async def test_a_request_in_hand_outlives_the_header_timeout() -> None:
    async with serve(header_timeout=0.2) as served:
        served.exporter.rendered = cast(Rendered, BigBody())
        reader, writer = await served.connect(small_receive_buffer=True)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: exporter\r\nConnection: close\r\n\r\n")
        await until(lambda: served.guard.busy == 1, "the scrape is being answered")
        # The header timeout passes (another connection is closed by it) while the body waits to be read.
        idle_reader, idle_writer = await served.connect()
        assert await read_to_end(idle_reader) == b""
        assert served.guard.timed_out == 1
        answer = await read_to_end(reader)
        close(writer, idle_writer)
        assert answer.endswith(BIG_BODY)


@pytest.mark.asyncio
async def test_a_client_that_does_not_read_the_body_loses_the_connection() -> None:
    async with serve(write_timeout=0.2) as served:
        served.exporter.rendered = cast(Rendered, BigBody())
        reader, writer = await served.connect(small_receive_buffer=True)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n\r\n")
        await until(lambda: served.guard.busy == 1, "the scrape is being answered")
        await until(lambda: served.guard.held == 0, "the server gave the connection up")
        received = await read_to_end(reader)
        close(writer)
        assert len(received) < len(BIG_BODY)


@pytest.mark.asyncio
async def test_at_the_cap_the_oldest_idle_connection_makes_room_for_a_scraper() -> None:
    async with serve(max_connections=4, header_timeout=60) as served:
        idle = [await served.connect() for _ in range(4)]
        await until(lambda: served.guard.held == 4, "the four idle connections are accepted")
        async with httpx.AsyncClient(base_url=f"http://{served.host}:{served.port}") as client:
            r = await client.get("/metrics")
        assert r.status_code == 200
        assert await read_to_end(idle[0][0]) == b""  # the oldest gave way
        close(*(writer for _, writer in idle))
        assert (served.guard.evicted, served.guard.refused, served.guard.timed_out) == (1, 0, 0)


@pytest.mark.asyncio
async def test_a_scraper_behind_a_burst_of_idle_connections_waits_its_turn_rather_than_being_refused() -> None:
    """Forty idle connections at once against a cap of eight: one may be shutting down at a time
    (closing_max), and the burst arrives faster than the loop closes them. Before `ready`, every connection
    accepted in that wake-up past the first eviction was refused, and a scraper among them got a reset."""
    async with serve(max_connections=8, header_timeout=60) as served:
        assert served.guard.closing_max == 1
        idle = [socket.create_connection((served.host, served.port)) for _ in range(40)]
        try:
            async with httpx.AsyncClient(base_url=f"http://{served.host}:{served.port}", timeout=BOUND) as client:
                r = await client.get("/metrics")
            assert r.status_code == 200
            await until(lambda: served.guard.evicted >= 33, "every idle connection past the cap made its way in")
            assert served.guard.refused == 0
            assert served.guard.held <= 8 + 1
        finally:
            for sock in idle:
                sock.close()


@pytest.mark.asyncio
async def test_accepts_wait_for_closing_connections_at_most_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ready` holds new connections in the kernel's queue while shut-down ones are still open, but not for
    good: a connection the loop never closes must not stop accepts. The loop's clock is stood in for."""
    async with serve(max_connections=2, header_timeout=60) as served:
        guard = served.guard
        idle = [await served.connect() for _ in range(2)]
        await until(lambda: guard.held == 2, "both idle connections are accepted")
        now = [1000.0]
        monkeypatch.setattr(guard, "_loop", type("Clock", (), {"time": lambda _: now[0]})())
        assert guard.ready()  # at the cap, an idle one can be shut down to make room
        guard._shut(next(iter(guard._open.values())))  # as _make_room does; the loop has not closed it yet
        assert not guard.ready()
        now[0] += connections.WAIT_MAX - 0.01
        assert not guard.ready()
        now[0] += 0.01
        assert guard.ready()  # past WAIT_MAX: taken, and refused by admit as before
        monkeypatch.undo()
        close(*(writer for _, writer in idle))


@pytest.mark.asyncio
async def test_when_every_held_connection_is_in_a_request_a_new_one_is_closed_at_once() -> None:
    async with serve(max_connections=2) as served:
        served.exporter.rendered = cast(Rendered, BigBody())
        slow = [await served.connect(small_receive_buffer=True) for _ in range(2)]
        for _, writer in slow:
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n\r\n")
        await until(lambda: served.guard.busy == 2, "both scrapes are being answered")
        reader, writer = await served.connect()
        assert await read_to_end(reader) == b""
        close(writer, *(writer for _, writer in slow))
        assert (served.guard.refused, served.guard.evicted) == (1, 0)


@pytest.mark.asyncio
async def test_a_port_in_use_is_an_error_naming_the_address() -> None:
    async with serve() as served:
        with pytest.raises(OSError, match=r"127\.0\.0\.1.*address already in use"):
            await start_server(served.exporter, f"127.0.0.1:{served.port}")


@pytest.mark.parametrize(
    ("soft_limit", "cap"),
    [(1024, 512), (65536, 512), (resource.RLIM_INFINITY, 512), (600, 344), (256, 128), (8, 4)],
)
def test_the_connection_cap_stays_below_the_file_limit(
    monkeypatch: pytest.MonkeyPatch, soft_limit: int, cap: int
) -> None:
    # The same module object that connections reads the limit from.
    monkeypatch.setattr(resource, "getrlimit", lambda _: (soft_limit, resource.RLIM_INFINITY))
    assert connection_cap() == cap
