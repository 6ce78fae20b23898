"""HTTP endpoints: /metrics, /, /-/healthy, /-/ready. Serves cached bytes; never calls a provider."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime

from aiohttp import web

from aht_exporter import __version__
from aht_exporter.scheduler import Exporter
from aht_exporter.webconfig import BasicAuth, WebConfig, auth_middleware, response_headers

EXPORTER_KEY = web.AppKey("exporter", Exporter)
WRITE_SLICE = 256 * 1024  # bytes of a /metrics body handed to the transport at once


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
    # The cached parts are written one after another, never joined, in slices that wait for the socket to
    # drain: the transport then never buffers more than a slice of a body per scrape, however many
    # scrapers read a 10 MB body at once.
    response = web.StreamResponse(headers=headers)
    response.content_length = sum(len(part) for part in parts)
    try:
        await response.prepare(request)
        if request.method != "HEAD":
            for part in parts:
                view = memoryview(part)
                for start in range(0, len(view), WRITE_SLICE):
                    await response.write(view[start : start + WRITE_SLICE])
    except ConnectionError:
        pass  # the scraper went away mid-body, as aiohttp's own responses let it
    return response  # aiohttp ends it (write_eof), minding a closed connection


async def healthy(_: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


async def ready(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER_KEY]
    waiting = [r.name for r in exporter.runners if not r.health.polled]
    if waiting:
        return web.Response(status=503, text=f"Not ready: first poll pending for {', '.join(waiting)}.\n")
    return web.Response(text="Ready.\n")


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
<p>Version {html.escape(__version__)}. <a href="/metrics">Metrics</a> &middot;
<a href="/-/healthy">/-/healthy</a> &middot; <a href="/-/ready">/-/ready</a></p>
<table>
<tr><th>Source</th><th>Provider</th><th>Health</th><th>Last success</th><th>Data up to</th>
<th>Series</th><th>Next poll</th><th>Last error</th></tr>
{"".join(rows)}
</table>
</body></html>
"""
    return web.Response(text=page, content_type="text/html")


def make_app(exporter: Exporter, web_config: WebConfig | None = None) -> web.Application:
    middlewares = [auth_middleware(BasicAuth(web_config.users))] if web_config and web_config.users else []
    app = web.Application(middlewares=middlewares)
    app[EXPORTER_KEY] = exporter
    app.on_response_prepare.append(response_headers(web_config))
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", status_page)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    return app


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """`:9779`, `0.0.0.0:9779`, `127.0.0.1:0`, `[::1]:9779`, `localhost:9779` -> (host or None for all, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{address!r} is not host:port")
    host = host.strip("[]")
    return (host or None), int(port)


async def start_server(
    exporter: Exporter, address: str, web_config: WebConfig | None = None
) -> tuple[web.AppRunner, list[str]]:
    """Start serving; return the runner and the bound addresses (the real port when asked for 0)."""
    host, port = parse_listen_address(address)
    # A scrape is a few milliseconds: at shutdown, wait at most a second for open ones.
    runner = web.AppRunner(make_app(exporter, web_config), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    ssl_context = web_config.ssl_context if web_config else None
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
    await site.start()
    bound = []
    for addr in runner.addresses:
        h, p = addr[0], addr[1]
        bound.append(f"[{h}]:{p}" if ":" in h else f"{h}:{p}")
    return runner, bound
