"""Slow and idle clients: every connection the server accepts passes a `ConnectionGuard` first.

It holds at most a cap of connections, below the process's file limit, and none longer than a deadline
without a request's complete headers. Without it, 1,100 idle connections under the default file limit made
accept() fail, scrapes time out and asyncio log 230,000 lines in 30 s (issue 12; docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from aht_exporter.logs import NOISY_INTERVAL
from aht_exporter.webconfig import Handler

log = logging.getLogger(__name__)

HEADER_TIMEOUT = 5.0
"""Seconds a connection gets to send a request's complete headers: from its accept (the TLS handshake
included) and again from the end of each request. As Apache's KeepAliveTimeout: a scraper sends its
request at once, and one that keeps the connection between scrapes reconnects if it was closed."""
MAX_CONNECTIONS = 512
"""Client connections held at once, at most (see `connection_cap`)."""
FILE_RESERVE = 256
"""Descriptors kept for everything else (provider connections, listening sockets, files) under the file
limit; under a limit below twice this, half the limit is kept instead (see `connection_cap`)."""
BACKLOG = 128  # connections the kernel queues before accept, and the most accepted at one wake-up
WAIT_MAX = 1.0
"""Seconds new connections may be left in the kernel's queue while connections shut down to make room
are being closed (see `ConnectionGuard.ready`); past it, they are taken and refused as before."""


def connection_cap(limit: int = MAX_CONNECTIONS, reserve: int = FILE_RESERVE) -> int:
    """How many client connections to hold at once: `limit`, or fewer when the file limit (RLIMIT_NOFILE,
    1,024 by default on Linux) would not leave `reserve` descriptors for the rest; under a limit below twice
    `reserve`, half the limit. Without a cap, 1,100 idle connections under the default limit made accept()
    fail with EMFILE, and scrapes timed out."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limit
    return max(1, min(limit, max(soft - reserve, soft // 2)))


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    fd: int
    busy: int = 0  # requests being handled on it
    closing: bool = False  # shut down; the event loop closes it when it sees the end of file
    deadline: asyncio.TimerHandle | None = None


class ConnectionGuard:
    """Holds at most `cap` client connections, and none longer than `header_timeout` without a request.

    Every accepted socket passes `admit` (see `_GuardedListener`), TLS or not, before anything else.

    - A connection must have sent a request's complete headers within `header_timeout` of its accept (TLS
      handshake included) and of the end of each request it made; else it is shut down.
    - At the cap, the oldest connection with no request in hand is shut down to make room for the new one:
      idle clients give way, so a scraper is answered however many connections others hold open. When
      every connection is in a request, the new one is closed at once.
    - When `closing_max` connections shut down to make room are still waiting for the event loop to close
      them, new connections are not taken (`ready` is False): they wait in the kernel's queue for a turn of
      the loop or two, rather than being refused. A scraper arriving among hundreds of idle connections is
      admitted, not closed because a burst came first.

    The guard shuts a connection down (`shutdown(2)`), never closes it under the event loop: the loop sees
    the end of file and closes it itself, on its next turn. At most `closing_max` shut-down connections
    wait for that at once, so clients hold at most `cap + closing_max` descriptors."""

    def __init__(self, cap: int, header_timeout: float) -> None:
        self.cap = cap
        self.closing_max = max(1, cap // 8)
        self.header_timeout = header_timeout
        self.timed_out = 0  # connections shut down for not sending a request in time
        self.evicted = 0  # idle connections shut down at the cap to admit a new one
        self.refused = 0  # new connections closed at the cap, every held one being in a request
        self._open: dict[int, _Connection] = {}  # by descriptor, oldest first
        self._loop = asyncio.get_running_loop()
        self._warned_at: float | None = None
        self._waiting_since: float | None = None  # when `ready` first said to wait, in the loop's time

    @property
    def held(self) -> int:
        """Client connections open or closing."""
        self._prune()
        return len(self._open)

    @property
    def busy(self) -> int:
        """Client connections with a request in hand."""
        return sum(1 for conn in self._open.values() if conn.busy)

    def ready(self) -> bool:
        """Whether to take the next connection from the kernel's queue now. False while the cap is reached
        and no room can be made only because `closing_max` shut-down connections are still open: the event
        loop closes them on its next turn, and the queue holds the new ones meanwhile. Never False for
        longer than `WAIT_MAX` in a row, so that a connection that is never closed cannot stop accepts."""
        if len(self._open) < self.cap:
            return self._done_waiting()
        self._prune()
        closing = sum(conn.closing for conn in self._open.values())
        idle = any(not conn.busy and not conn.closing for conn in self._open.values())
        if len(self._open) < self.cap or closing < self.closing_max or not idle:
            return self._done_waiting()  # room, room to be made, or none to be made (admit refuses)
        now = self._loop.time()
        if self._waiting_since is None:
            self._waiting_since = now
        return now - self._waiting_since >= WAIT_MAX

    def _done_waiting(self) -> bool:
        self._waiting_since = None
        return True

    def admit(self, sock: socket.socket) -> bool:
        """Whether to keep a connection just accepted (False: close it now)."""
        if len(self._open) >= self.cap:
            self._prune()
            if len(self._open) >= self.cap and not self._make_room():
                self.refused += 1
                self._warn()
                return False
        conn = _Connection(sock, sock.fileno())
        self._open.pop(conn.fd, None)  # a descriptor used again: its old connection is closed
        self._open[conn.fd] = conn
        self._arm(conn)
        return True

    def middleware(self) -> Any:
        @web.middleware
        async def track(request: web.Request, handler: Handler) -> web.StreamResponse:
            conn = self._request_started(request.transport)
            try:
                return await handler(request)
            finally:
                self._request_ended(conn)

        return track

    async def cleanup(self, _: web.Application) -> None:
        for conn in self._open.values():
            if conn.deadline:
                conn.deadline.cancel()
        self._open.clear()

    def _request_started(self, transport: asyncio.BaseTransport | None) -> _Connection | None:
        sock = transport.get_extra_info("socket") if transport is not None else None
        conn = self._open.get(sock.fileno()) if sock is not None else None
        if conn is None or conn.sock.fileno() != conn.fd:
            return None
        conn.busy += 1
        if conn.deadline:
            conn.deadline.cancel()
            conn.deadline = None
        return conn

    def _request_ended(self, conn: _Connection | None) -> None:
        if conn is not None:
            conn.busy -= 1
            if not conn.busy and not conn.closing:
                self._arm(conn)

    def _arm(self, conn: _Connection) -> None:
        if conn.deadline:
            conn.deadline.cancel()
        conn.deadline = self._loop.call_later(self.header_timeout, self._expire, conn)

    def _expire(self, conn: _Connection) -> None:
        conn.deadline = None
        if conn.sock.fileno() == -1:
            if self._open.get(conn.fd) is conn:
                del self._open[conn.fd]
        elif not conn.busy and not conn.closing:
            self.timed_out += 1
            self._shut(conn)

    def _make_room(self) -> bool:
        if sum(conn.closing for conn in self._open.values()) >= self.closing_max:
            return False
        for conn in self._open.values():  # oldest first
            if not conn.busy and not conn.closing:
                self.evicted += 1
                self._shut(conn)
                self._warn()
                return True
        return False

    def _shut(self, conn: _Connection) -> None:
        conn.closing = True
        if conn.deadline:
            conn.deadline.cancel()
            conn.deadline = None
        with contextlib.suppress(OSError):  # the peer is gone already: the loop closes it all the same
            conn.sock.shutdown(socket.SHUT_RDWR)

    def _prune(self) -> None:
        closed = [fd for fd, conn in self._open.items() if conn.sock.fileno() == -1]
        for fd in closed:
            conn = self._open.pop(fd)
            if conn.deadline:
                conn.deadline.cancel()

    def _warn(self) -> None:
        now = self._loop.time()
        if self._warned_at is None or now - self._warned_at >= NOISY_INTERVAL:
            self._warned_at = now
            log.warning(
                "connection cap reached: idle connections closed to admit new ones",
                extra={"cap": self.cap, "evicted_total": self.evicted, "refused_total": self.refused},
            )


GUARD_KEY = web.AppKey("guard", ConnectionGuard)


class _GuardedListener(socket.socket):
    """A listening socket that asks its guard about each connection it accepts.

    asyncio's event loop accepts through the listening socket's own accept() (up to the backlog at each
    wake-up): the one place every connection passes, TLS or not, while it holds nothing but a descriptor."""

    guard: ConnectionGuard

    def accept(self) -> tuple[socket.socket, Any]:
        for _ in range(BACKLOG):
            if not self.guard.ready():
                break  # left in the kernel's queue until the loop has closed what was shut down
            conn, address = super().accept()  # BlockingIOError when none is waiting: the loop stops there
            if self.guard.admit(conn):
                return conn, address
            conn.close()
        raise BlockingIOError  # the others wait for the loop's next turn


async def listen(host: str | None, port: int, guard: ConnectionGuard) -> list[_GuardedListener]:
    """Bound listening sockets for every address of `host` (all interfaces for None), as asyncio's
    create_server makes them."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listeners: list[_GuardedListener] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            try:
                sock = _GuardedListener(family, kind, proto)
            except OSError:
                continue  # an address family this host lacks (IPv6, say), as create_server skips it
            listeners.append(sock)
            sock.guard = guard
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                reason = (exc.strerror or str(exc)).lower()
                raise OSError(exc.errno, f"error while attempting to bind on address {address!r}: {reason}") from None
            sock.listen(BACKLOG)
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    if not listeners:
        raise OSError(f"no address to listen on for {host or '*'}:{port}")
    return listeners
