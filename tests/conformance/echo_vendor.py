"""A vendor that echoes credentials: it stands in front of a provider's simulator, forwards the requests
it is told to, and answers every other one with HTTP 400 and a body that repeats what the request carried
(its headers, its query, its body, form-decoded too), as careless vendor APIs do in their error messages."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote_plus

import httpx
from aiohttp import web

# Headers every request has and no credential is in; the rest are echoed, in the order the client sent them.
PLAIN_HEADERS = frozenset(
    {"host", "accept", "accept-encoding", "connection", "content-length", "content-type", "user-agent"}
)
# Headers of a forwarded reply that describe the upstream connection or encoding, not the reply itself.
HOP_HEADERS = frozenset({"content-length", "content-encoding", "transfer-encoding", "connection"})
MARKER = "echo:"
# Header names that say a credential rides in the header's value.
CREDENTIAL_HEADER_WORDS = ("auth", "token", "key", "secret")


def echo_text(request: web.Request, body: bytes) -> str:
    """What the request carried, most telling first; a vendor's error text is cut to 300 characters."""
    headers = [f"{k}={v}" for k, v in request.headers.items() if k.lower() not in PLAIN_HEADERS]
    text = body.decode("utf-8", "replace")
    parts = [*headers, f"query={request.query_string}", f"form={unquote_plus(text)}", f"body={text}"]
    return f"{MARKER} " + " ".join(parts)


class EchoVendor:
    """The proxy, on an ephemeral loopback port; `echoed` and `credentials` say what it echoed."""

    def __init__(self, upstream: str, echo: Callable[[str], bool]) -> None:
        self.upstream = upstream.rstrip("/")
        self.echo = echo  # path -> whether to echo rather than forward
        self.echoed: list[str] = []
        self.credentials: list[str] = []  # the credential header values of the echoed requests
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._client = httpx.AsyncClient(timeout=30.0)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        await self._client.aclose()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.echo(request.path):
            text = echo_text(request, body)
            self.credentials += [
                v for k, v in request.headers.items() if any(w in k.lower() for w in CREDENTIAL_HEADER_WORDS)
            ]
            self.echoed.append(text)
            return web.Response(status=400, text=text)
        # The Host header too: a signed request (SigV4) signs the address the client called.
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        reply = await self._client.request(
            request.method, self.upstream + request.path_qs, headers=headers, content=body
        )
        # A reply may name the simulator's address (a domain lookup, LivePerson's): the proxy's own takes its
        # place, so that the client keeps talking to the proxy.
        upstream_host, own_host = self.upstream.split("://", 1)[1], self.url.split("://", 1)[1]
        content = reply.content.replace(upstream_host.encode(), own_host.encode())
        kept = {k: v for k, v in reply.headers.items() if k.lower() not in HOP_HEADERS}
        return web.Response(status=reply.status_code, body=content, headers=kept)
