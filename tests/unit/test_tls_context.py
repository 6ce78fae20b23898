"""One TLS context for every API client, made at start (`httpclient.tls_context`, `warm_up`): loading the CA
bundle holds the GIL for tens of ms, which the first poll used to do on the event loop, once per source."""

from __future__ import annotations

import ssl
import subprocess
import sys

import httpx
import pytest

from aht_exporter import httpclient
from aht_exporter.health import SourceHealth
from aht_exporter.httpclient import ApiClient


@pytest.mark.asyncio
async def test_every_client_verifies_with_the_one_context_made_once(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[ssl.SSLContext] = []
    real = httpx.create_ssl_context

    def counting() -> ssl.SSLContext:
        made.append(real())
        return made[-1]

    monkeypatch.setattr(httpx, "create_ssl_context", counting)
    httpclient.tls_context.cache_clear()
    try:
        clients = [ApiClient(counter=SourceHealth(f"s{i}", "genesys", 3), timeout=5) for i in range(3)]
        assert len(made) == 1
        context = made[0]
        # As httpx's default: certificates and host names are checked.
        assert context.verify_mode is ssl.CERT_REQUIRED
        assert context.check_hostname
        assert context.cert_store_stats()["x509_ca"] > 0
        for client in clients:
            pool = client.http._transport._pool  # type: ignore[attr-defined]
            assert pool._ssl_context is context
            await client.aclose()
    finally:
        httpclient.tls_context.cache_clear()


def test_warm_up_loads_the_context_and_the_first_requests_modules() -> None:
    # In a fresh interpreter: what warm_up imports must not be imported already.
    code = (
        "import sys\n"
        "from aht_exporter import httpclient\n"
        "first = ('httpcore', 'h11', 'anyio', 'anyio._backends._asyncio', 'anyio.streams.tls')\n"
        "assert not set(first) & set(sys.modules), set(first) & set(sys.modules)\n"
        "assert httpclient.tls_context.cache_info().currsize == 0\n"
        "httpclient.warm_up()\n"
        "assert set(first) <= set(sys.modules)\n"
        "assert httpclient.tls_context.cache_info().currsize == 1\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
