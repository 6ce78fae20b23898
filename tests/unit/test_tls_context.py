"""One TLS context for every API client, made at start (`httpclient.tls_context`, `warm_up`) and again at
each config reload: loading the CA bundle holds the GIL for tens of ms, which the first poll used to do on the
event loop, once per source."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from aht_exporter import httpclient
from aht_exporter.health import SourceHealth
from aht_exporter.httpclient import ApiClient
from aht_exporter.model import ConfigError


def pool_context(client: ApiClient) -> ssl.SSLContext:
    return client.http._transport._pool._ssl_context  # type: ignore[attr-defined,no-any-return]


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[ssl.SSLContext]:
    """Every context httpx makes for us, from no context at all."""
    contexts: list[ssl.SSLContext] = []
    real = httpx.create_ssl_context

    def counting() -> ssl.SSLContext:
        contexts.append(real())
        return contexts[-1]

    monkeypatch.setattr(httpx, "create_ssl_context", counting)
    monkeypatch.setattr(httpclient, "_TLS", None)
    return contexts


@pytest.mark.asyncio
async def test_every_client_verifies_with_the_one_context_made_once(made: list[ssl.SSLContext]) -> None:
    clients = [ApiClient(counter=SourceHealth(f"s{i}", "genesys", 3), timeout=5) for i in range(3)]
    assert len(made) == 1
    context = made[0]
    # As httpx's default: certificates and host names are checked, against a CA bundle.
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0
    for client in clients:
        assert pool_context(client) is context
        await client.aclose()


@pytest.mark.asyncio
async def test_a_reloaded_context_serves_the_clients_made_after_it(made: list[ssl.SSLContext]) -> None:
    before = ApiClient(counter=SourceHealth("kept", "genesys", 3), timeout=5)
    again = httpclient.reload_tls_context()
    after = ApiClient(counter=SourceHealth("added", "genesys", 3), timeout=5)
    assert len(made) == 2 and again is made[1]
    assert pool_context(before) is made[0] and pool_context(after) is again
    for client in (before, after):
        await client.aclose()


def test_a_ca_bundle_that_cannot_be_read_keeps_the_context_there_was(
    made: list[ssl.SSLContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = httpclient.tls_context()
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")
    with pytest.raises(ConfigError) as caught:
        httpclient.reload_tls_context()
    assert str(caught.value).startswith("the CA bundle (SSL_CERT_FILE or SSL_CERT_DIR) cannot be read: [Errno 2]")
    assert httpclient.tls_context() is first


def test_warm_up_loads_the_context_and_the_first_requests_modules() -> None:
    # In a fresh interpreter: what warm_up imports must not be imported already.
    code = (
        "import sys\n"
        "from aht_exporter import httpclient\n"
        "first = ('httpcore', 'h11', 'anyio', 'anyio._backends._asyncio', 'anyio.streams.tls')\n"
        "assert not set(first) & set(sys.modules), set(first) & set(sys.modules)\n"
        "assert httpclient._TLS is None\n"
        "httpclient.warm_up()\n"
        "assert set(first) <= set(sys.modules)\n"
        "assert httpclient._TLS is not None\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_ca_bundle_that_cannot_be_read_at_start_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "sources:\n"
        "  - name: g\n"
        "    provider: genesys\n"
        "    region: mypurecloud.com\n"
        "    client_id: id\n"
        "    client_secret: secret-1234\n"
    )
    env = {**os.environ, "SSL_CERT_FILE": str(tmp_path / "missing-ca.pem")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "aht_exporter",
            f"--config.file={config}",
            "--web.listen-address=127.0.0.1:0",
            f"--storage.path={tmp_path / 'state'}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "the CA bundle (SSL_CERT_FILE or SSL_CERT_DIR) cannot be read: [Errno 2] No such file or directory"
    ]
