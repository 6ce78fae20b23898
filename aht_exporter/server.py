"""HTTP endpoints: /metrics, /, /-/healthy, /-/ready, /-/reload. Serves cached bytes; never calls a provider.

No client can hold more than its share: every connection passes a `ConnectionGuard` (a cap below the
process's file limit, a deadline for a request's headers), and a /metrics body that is not read in
`WRITE_TIMEOUT` is given up.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from aiohttp import web

from aht_exporter import __version__
from aht_exporter.connections import (
    BACKLOG,
    GUARD_KEY,
    HEADER_TIMEOUT,
    ConnectionGuard,
    connection_cap,
    listen,
)
from aht_exporter.exposition import Segment
from aht_exporter.model import utf8
from aht_exporter.reload import Reloader
from aht_exporter.scheduler import Exporter
from aht_exporter.webconfig import BasicAuth, WebConfig, auth_middleware, response_headers

log = logging.getLogger(__name__)

EXPORTER_KEY = web.AppKey("exporter", Exporter)
RELOADER_KEY = web.AppKey("reloader", Reloader)  # set only with --web.enable-lifecycle
WRITE_TIMEOUT_KEY = web.AppKey("write_timeout", float)
TELEMETRY_PATH = "/metrics"  # --web.telemetry-path
TELEMETRY_PATH_KEY = web.AppKey("telemetry_path", str)
WRITE_SLICE = 256 * 1024  # bytes of a /metrics body handed to the transport at once
WRITE_TIMEOUT = 60.0
"""Seconds to send a /metrics body (Prometheus' scrape_timeout is at most the scrape interval, and 10 s by
default); a client that reads slower loses the connection rather than hold it."""


def text_response(text: str, *, status: int = 200, content_type: str = "text/plain") -> web.Response:
    """A text response that cannot fail to encode (aiohttp's `text=` raises on a lone surrogate)."""
    return web.Response(status=status, body=utf8(text), content_type=content_type, charset="utf-8")


def wants_openmetrics(accept: str) -> bool:
    return "application/openmetrics-text" in accept


def accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return not re.search(r"q\s*=\s*0(\.0*)?\s*$", params)
    return False


async def metrics(request: web.Request) -> web.StreamResponse:
    rendered = request.app[EXPORTER_KEY].rendered
    gzipped = accepts_gzip(request.headers.get("Accept-Encoding", ""))
    parts, content_type = rendered.body(
        openmetrics=wants_openmetrics(request.headers.get("Accept", "")), gzipped=gzipped
    )
    headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    # The parts (the cached ones, then the few process_* and python_gc_* families `body` just read) are
    # written one after another, never joined, in slices that wait for the socket to drain: the transport
    # then never buffers more than a slice of a body per scrape, however many scrapers read a 10 MB body at once.
    # An uncompressed body's big data segments are inflated a slice at a time as they are written, each slice
    # in a worker thread, and nothing of them is kept (docs/performance.md, "Issue 18, continued"): at 100k
    # agents their text is about 90 MB, where the deflate data the render keeps is 20.
    response = web.StreamResponse(headers=headers)
    response.content_length = sum(part.size if isinstance(part, Segment) else len(part) for part in parts)
    try:
        async with asyncio.timeout(request.app[WRITE_TIMEOUT_KEY]):
            await response.prepare(request)
            if request.method != "HEAD":
                for part in parts:
                    if isinstance(part, Segment):
                        slices = part.text_slices(WRITE_SLICE)
                        while (piece := await asyncio.to_thread(next, slices, None)) is not None:
                            await response.write(piece)
                        continue
                    view = memoryview(part)
                    for start in range(0, len(view), WRITE_SLICE):
                        await response.write(view[start : start + WRITE_SLICE])
    except ConnectionError:
        pass  # the scraper went away mid-body, as aiohttp's own responses let it
    except TimeoutError:
        # A client that does not read: drop the connection and what is still buffered for it.
        if request.transport is not None:
            request.transport.abort()
    return response  # aiohttp ends it (write_eof), minding a closed connection


async def healthy(_: web.Request) -> web.Response:
    return text_response("Healthy.\n")


async def ready(request: web.Request) -> web.Response:
    waiting = request.app[EXPORTER_KEY].first_polls_pending()
    if waiting:
        return text_response(f"Not ready: first poll pending for {', '.join(waiting)}.\n", status=503)
    return text_response("Ready.\n")


async def reload(request: web.Request) -> web.Response:
    """POST or PUT /-/reload, as Prometheus answers it: 200 once the new config runs, 500 with the one-line
    reason when it was refused (the old one still runs), 403 without --web.enable-lifecycle."""
    reloader = request.app.get(RELOADER_KEY)
    if reloader is None:
        return text_response("Lifecycle API is not enabled.\n", status=403)
    outcome = await reloader.reload()
    return text_response(f"{outcome.message}\n", status=200 if outcome.ok else 500)


async def reload_needs_post(_: web.Request) -> web.Response:
    response = text_response("Only POST or PUT requests allowed\n", status=405)
    response.headers["Allow"] = "POST, PUT"
    return response


def _when(t: float | None) -> str:
    if t is None:
        return "never"
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def status_page(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER_KEY]
    rows = []
    for runner in exporter.runners:
        h = runner.health
        if not h.polled:
            state, css = "pending", "pending"
        elif not h.up and h.last_success is None:  # nothing to keep or withdraw yet
            state, css = f"down ({h.consecutive_failures} failed polls, no data yet)", "down"
        elif h.stale:
            state, css = f"down, data withdrawn after {h.consecutive_failures} failed polls", "down"
        elif h.up:
            state, css = "up", "up"
        else:
            state, css = f"down ({h.consecutive_failures} failed polls, keeping last data)", "down"
        rows.append(
            "<tr>"
            + "".join(f"<td>{html.escape(str(v))}</td>" for v in (h.source, h.provider))
            + f'<td class="{css}">{html.escape(state)}</td>'
            + "".join(
                f"<td>{html.escape(str(v))}</td>"
                for v in (
                    _when(h.last_success),
                    _when(h.data_end and float(h.data_end)),
                    f"0 ({h.series} withdrawn)" if h.stale else h.series,
                    _when(h.next_poll) if h.next_poll is not None else "not scheduled",
                    f"{h.last_error} (at {_when(h.last_error_at)})" if h.last_error else "",
                )
            )
            + "</tr>"
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>aht-exporter</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: .3em .6em; text-align: left; }}
.up {{ color: #070; font-weight: bold; }} .down {{ color: #b00; font-weight: bold; }} .pending {{ color: #777; }}
</style></head>
<body>
<h1>aht-exporter</h1>
<p>Version {html.escape(__version__)}. <a href="{html.escape(request.app[TELEMETRY_PATH_KEY])}">Metrics</a> &middot;
<a href="/-/healthy">/-/healthy</a> &middot; <a href="/-/ready">/-/ready</a></p>
<table>
<tr><th>Source</th><th>Provider</th><th>Health</th><th>Last success</th><th>Data up to</th>
<th>Series</th><th>Next poll</th><th>Last error</th></tr>
{"".join(rows)}
</table>
</body></html>
"""
    return text_response(page, content_type="text/html")


def make_app(
    exporter: Exporter,
    web_config: WebConfig | None = None,
    *,
    guard: ConnectionGuard | None = None,
    write_timeout: float = WRITE_TIMEOUT,
    telemetry_path: str = TELEMETRY_PATH,
    reloader: Reloader | None = None,
) -> web.Application:
    """`reloader`: the lifecycle API (--web.enable-lifecycle); without it POST /-/reload is refused."""
    middlewares = [guard.middleware()] if guard else []  # outermost: a request in hand is never cut short
    if web_config and web_config.users:
        middlewares.append(auth_middleware(BasicAuth(web_config.users)))
    app = web.Application(middlewares=middlewares)
    app[EXPORTER_KEY] = exporter
    app[WRITE_TIMEOUT_KEY] = write_timeout
    app[TELEMETRY_PATH_KEY] = telemetry_path
    if reloader is not None:
        app[RELOADER_KEY] = reloader
    if guard:
        app[GUARD_KEY] = guard
        app.on_cleanup.append(guard.cleanup)
    app.on_response_prepare.append(response_headers(web_config))
    app.router.add_get(telemetry_path, metrics)
    app.router.add_get("/", status_page)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    app.router.add_put("/-/reload", reload)
    app.router.add_get("/-/reload", reload_needs_post)
    return app


RESERVED_PATHS = ("/", "/-/healthy", "/-/ready", "/-/reload")


def check_telemetry_path(path: str) -> str:
    """`--web.telemetry-path`: an absolute path that no other endpoint uses, or a ValueError saying why."""
    if not path.startswith("/") or any(c.isspace() for c in path) or "?" in path or "#" in path:
        raise ValueError(f"{path!r} is not an absolute URL path (e.g. /metrics)")
    if path in RESERVED_PATHS:
        raise ValueError(f"{path} is already the path of another endpoint")
    return path


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """`:9779`, `0.0.0.0:9779`, `127.0.0.1:0`, `[::1]:9779`, `localhost:9779` -> (host or None for all, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{address!r} is not host:port")
    host = host.strip("[]")
    return (host or None), int(port)


async def start_server(
    exporter: Exporter,
    address: str | Sequence[str],
    web_config: WebConfig | None = None,
    *,
    header_timeout: float = HEADER_TIMEOUT,
    max_connections: int | None = None,
    write_timeout: float = WRITE_TIMEOUT,
    telemetry_path: str = TELEMETRY_PATH,
    reloader: Reloader | None = None,
) -> tuple[web.AppRunner, list[str]]:
    """Start serving on each address; return the runner and the bound addresses (the real port when asked
    for 0). One connection cap covers every address.

    `max_connections` defaults to `connection_cap()`, from the process's file limit."""
    addresses = [address] if isinstance(address, str) else list(address)
    parsed = [parse_listen_address(a) for a in addresses]
    guard = ConnectionGuard(max_connections or connection_cap(), header_timeout)
    app = make_app(
        exporter, web_config, guard=guard, write_timeout=write_timeout, telemetry_path=telemetry_path, reloader=reloader
    )
    # A scrape is a few milliseconds: at shutdown, wait at most a second for open ones.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    ssl_context = web_config.ssl_context if web_config else None
    try:
        for host, port in parsed:
            for sock in await listen(host, port, guard):
                await web.SockSite(runner, sock, ssl_context=ssl_context, backlog=BACKLOG).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = []
    for addr in runner.addresses:
        h, p = addr[0], addr[1]
        bound.append(f"[{h}]:{p}" if ":" in h else f"{h}:{p}")
    return runner, bound
