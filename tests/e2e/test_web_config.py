"""--web.config.file: TLS (with an optional client CA) and bcrypt basic auth, with certificates made here."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import bcrypt
import httpx
import pytest
import pytest_asyncio
import trustme

from aht_exporter.config import build_config
from aht_exporter.model import ConfigError
from aht_exporter.scheduler import Exporter
from aht_exporter.server import start_server
from aht_exporter.webconfig import load_web_config

HASH = bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_web_config(tmp_path: Path, ca: trustme.CA, body: str) -> str:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    path = tmp_path / "web.yml"
    path.write_text(body)
    return str(path)


async def serve(web_path: str) -> tuple[Exporter, object, str]:
    config = build_config(
        {
            "sources": [
                {
                    "name": "g",
                    "provider": "genesys",
                    "region": "mypurecloud.com",
                    "client_id": "a",
                    "client_secret": "b",
                }
            ]
        },
        "t",
        {},
    )
    exporter = Exporter(config)
    runner, bound = await start_server(exporter, "127.0.0.1:0", load_web_config(web_path))
    return exporter, runner, f"https://{bound[0]}"


TLS_AND_AUTH = f"""
tls_server_config:
  cert_file: server.crt
  key_file: server.key
basic_auth_users:
  alice: "{HASH}"
"""


@pytest_asyncio.fixture
async def guarded(tmp_path: Path, ca: trustme.CA) -> AsyncIterator[tuple[str, ssl.SSLContext]]:
    exporter, runner, url = await serve(write_web_config(tmp_path, ca, TLS_AND_AUTH))
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    yield url, client_ctx
    await runner.cleanup()  # type: ignore[attr-defined]
    await exporter.aclose()


@pytest.mark.asyncio
async def test_the_right_credentials_over_tls_get_metrics(guarded: tuple[str, ssl.SSLContext]) -> None:
    url, ctx = guarded
    async with httpx.AsyncClient(base_url=url, verify=ctx, auth=("alice", "s3cret-pass")) as client:
        r = await client.get("/metrics")
        assert r.status_code == 200
        assert "aht_exporter_build_info" in r.text
        assert (await client.get("/metrics")).status_code == 200  # the cached verification


@pytest.mark.asyncio
@pytest.mark.parametrize("auth", [None, ("alice", "wrong"), ("mallory", "s3cret-pass"), ("alice", "")])
async def test_wrong_or_missing_credentials_get_the_same_401(
    guarded: tuple[str, ssl.SSLContext], auth: tuple[str, str] | None
) -> None:
    url, ctx = guarded
    async with httpx.AsyncClient(base_url=url, verify=ctx, auth=auth) as client:
        for path in ("/metrics", "/", "/-/ready"):
            r = await client.get(path)
            assert r.status_code == 401
            assert r.text == "Unauthorized\n"
            assert r.headers["WWW-Authenticate"] == 'Basic realm="aht-exporter"'


@pytest.mark.asyncio
async def test_healthy_stays_open(guarded: tuple[str, ssl.SSLContext]) -> None:
    url, ctx = guarded
    async with httpx.AsyncClient(base_url=url, verify=ctx) as client:
        assert (await client.get("/-/healthy")).status_code == 200


@pytest.mark.asyncio
async def test_plain_http_to_the_tls_port_gets_nothing(guarded: tuple[str, ssl.SSLContext]) -> None:
    url, _ = guarded
    async with httpx.AsyncClient(base_url=url.replace("https://", "http://")) as client:
        with pytest.raises(httpx.HTTPError):
            r = await client.get("/-/healthy")
            r.raise_for_status()


@pytest.mark.asyncio
async def test_a_client_ca_requires_a_client_certificate(tmp_path: Path, ca: trustme.CA) -> None:
    body = (
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"
    )
    exporter, runner, url = await serve(write_web_config(tmp_path, ca, body))
    try:
        anonymous = ssl.create_default_context()
        ca.configure_trust(anonymous)
        async with httpx.AsyncClient(base_url=url, verify=anonymous) as client:
            with pytest.raises(httpx.HTTPError):
                await client.get("/metrics")
        with_cert = ssl.create_default_context()
        ca.configure_trust(with_cert)
        ca.issue_cert("scraper@example.com").configure_cert(with_cert)
        async with httpx.AsyncClient(base_url=url, verify=with_cert) as client:
            assert (await client.get("/metrics")).status_code == 200
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]
        await exporter.aclose()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("basic_auth_users:\n  alice: plaintext\n", "basic_auth_users.alice: not a bcrypt hash"),
        ("tls_server_config:\n  cert_file: a.crt\n", "tls_server_config.key_file: Field required"),
        ("tls_config: {}\n", "tls_config: unknown key"),
        ("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n", "cannot load cert_file/key_file"),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  client_auth_type: RequireAndVerifyClientCert\n",
            "tls_server_config.client_ca_file: is required with RequireAndVerifyClientCert",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: SSL3\n",
            "tls_server_config.min_version",
        ),
        ("basic_auth_users: [\n", "YAML syntax error"),
    ],
)
def test_a_bad_web_config_is_one_line_naming_the_key(tmp_path: Path, ca: trustme.CA, body: str, message: str) -> None:
    path = write_web_config(tmp_path, ca, body)
    with pytest.raises(ConfigError) as info:
        load_web_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)
