"""--web.config.file: TLS (with an optional client CA) and bcrypt basic auth, with certificates made here."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import pytest_asyncio
import trustme
from aiohttp import web

from aht_exporter import webconfig
from aht_exporter.model import ConfigError
from aht_exporter.registry import build_config
from aht_exporter.scheduler import Exporter
from aht_exporter.server import make_app, start_server
from aht_exporter.webconfig import load_web_config, response_headers

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


SOURCE = {"name": "g", "provider": "genesys", "region": "mypurecloud.com", "client_id": "a", "client_secret": "b"}


async def serve(web_path: str, **options: Any) -> tuple[Exporter, web.AppRunner, str]:
    config = build_config({"sources": [SOURCE]}, "t", {})
    exporter = Exporter(config)
    runner, bound = await start_server(exporter, "127.0.0.1:0", load_web_config(web_path), **options)
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
    await runner.cleanup()
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


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.asyncio
@pytest.mark.parametrize(("costs", "expected"), [((5,), 5), ((4, 6), 6)])
async def test_an_unknown_user_is_checked_at_the_configured_cost(
    monkeypatch: pytest.MonkeyPatch, costs: tuple[int, ...], expected: int
) -> None:
    """bcrypt takes 2**cost rounds: an unknown user checked against a cheaper hash than a known one answers
    faster, which tells an attacker which user names exist (cost 10 against 12: 0.10 s against 0.35 s)."""
    checked: list[bytes] = []

    def check(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return False

    monkeypatch.setattr(webconfig, "_checkpw", check)
    users = {f"user{i}": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=cost)) for i, cost in enumerate(costs)}
    assert not await webconfig.BasicAuth(users).allowed(basic("mallory", "pw"))
    [dummy] = checked
    assert dummy not in users.values()
    assert int(dummy[4:6]) == expected
    assert bcrypt.checkpw(b"pw", dummy) is False  # well formed: bcrypt really runs its rounds


@pytest.mark.asyncio
@pytest.mark.parametrize("handshake", [False, True], ids=["no-handshake", "no-request"])
async def test_an_idle_tls_connection_is_closed_after_the_header_timeout(
    tmp_path: Path, ca: trustme.CA, handshake: bool
) -> None:
    exporter, runner, url = await serve(write_web_config(tmp_path, ca, TLS_AND_AUTH), header_timeout=0.2)
    host, _, port = url.removeprefix("https://").rpartition(":")
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    try:
        reader, writer = await asyncio.open_connection(host, int(port), ssl=client_ctx if handshake else None)
        try:
            async with asyncio.timeout(15):
                assert await reader.read() == b""
        except (ConnectionResetError, ssl.SSLError):
            pass  # closed less politely: closed all the same
        finally:
            writer.close()
    finally:
        await runner.cleanup()
        await exporter.aclose()


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
        await runner.cleanup()
        await exporter.aclose()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("basic_auth_users:\n  alice: plaintext\n", "basic_auth_users.alice: not a bcrypt hash"),
        # Cut short, and of a cost bcrypt refuses: both used to pass the load and fail every login.
        ("basic_auth_users:\n  alice: $2y$10$tooshort\n", "basic_auth_users.alice: not a bcrypt hash"),
        (f"basic_auth_users:\n  alice: $2y$03${HASH[7:]}\n", "basic_auth_users.alice: not a bcrypt hash"),
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
        *(
            (
                f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: {kind}\n"
                "  client_ca_file: ca.crt\n",
                f"tls_server_config.client_auth_type: {kind} is not supported (a client certificate cannot be taken"
                " unverified); use NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert (the last"
                " two need client_ca_file)",
            )
            for kind in ("RequireAnyClientCert", "RequestClientCert")
        ),
        *(
            (
                f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  {key}: {value}\n",
                f"tls_server_config.{key}: not supported (Python's ssl uses OpenSSL's defaults); remove it",
            )
            for key, value in (
                ("cipher_suites", "[TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]"),
                ("prefer_server_cipher_suites", "true"),
                ("curve_preferences", "[X25519]"),
            )
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  max_version: TLS14\n",
            "tls_server_config.max_version",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  min_version: TLS13\n  max_version: TLS12\n",
            "tls_server_config.min_version: TLS13 is above max_version",
        ),
        *(
            (
                f"http_server_config:\n  headers:\n    {name}: x\n",
                f"http_server_config.headers.{name}: cannot be configured (allowed: Content-Security-Policy,"
                " Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, X-XSS-Protection)",
            )
            for name in ("Authorization", "Content-Type", "Set-Cookie", "x-frame-options")
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow-from\n",
            "http_server_config.headers.X-Frame-Options: expected one of deny, sameorigin, got 'allow-from'",
        ),
        (
            "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
            "http_server_config.headers.X-Content-Type-Options: expected one of nosniff",
        ),
        ('http_server_config:\n  headers:\n    X-XSS-Protection: "1\\r\\nSet-Cookie: a=b"\n', "must be one line"),
        ("http_server_config:\n  http3: true\n", "http_server_config.http3: unknown key"),
    ],
)
def test_a_bad_web_config_is_one_line_naming_the_key(tmp_path: Path, ca: trustme.CA, body: str, message: str) -> None:
    path = write_web_config(tmp_path, ca, body)
    with pytest.raises(ConfigError) as info:
        load_web_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("version", ["TLS10", "TLS11", "TLS12", "TLS13"])
def test_every_toolkit_tls_version_is_accepted(tmp_path: Path, ca: trustme.CA, version: str) -> None:
    body = (
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        f"  min_version: {version}\n  max_version: {version}\n"
    )
    context = load_web_config(write_web_config(tmp_path, ca, body)).ssl_context
    assert context is not None
    expected = getattr(ssl.TLSVersion, {"TLS10": "TLSv1"}.get(version, f"TLSv1_{version[-1]}"))
    assert context.minimum_version == context.maximum_version == expected


async def negotiated(url: str, client: ssl.SSLContext) -> str | None:
    host, _, port = url.removeprefix("https://").rpartition(":")
    _, writer = await asyncio.open_connection(host, int(port), ssl=client)
    try:
        version: str | None = writer.get_extra_info("ssl_object").version()
        return version
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_max_version_caps_the_handshake_and_min_version_refuses_older(tmp_path: Path, ca: trustme.CA) -> None:
    tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
    client = ssl.create_default_context()
    ca.configure_trust(client)
    exporter, runner, url = await serve(write_web_config(tmp_path, ca, tls + "  max_version: TLS12\n"))
    try:
        assert await negotiated(url, client) == "TLSv1.2"
    finally:
        await runner.cleanup()
        await exporter.aclose()
    exporter, runner, url = await serve(write_web_config(tmp_path, ca, tls + "  min_version: TLS13\n"))
    try:
        assert await negotiated(url, client) == "TLSv1.3"
        client.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionError)):  # the server refuses, or just hangs up
            await negotiated(url, client)
    finally:
        await runner.cleanup()
        await exporter.aclose()


HEADERS = f"""
http_server_config:
  http2: false   # accepted, no effect
  headers:
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
    Content-Security-Policy: "default-src 'self'"
    Strict-Transport-Security: max-age=31536000
    X-XSS-Protection: ""
basic_auth_users:
  alice: "{HASH}"
"""


async def assert_headers_on_every_response(url: str, verify: ssl.SSLContext | bool = True) -> None:
    expected = {
        "X-Frame-Options": "deny",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'self'",
        "Strict-Transport-Security": "max-age=31536000",
    }
    async with httpx.AsyncClient(base_url=url, verify=verify) as client:
        answers = [await client.get(p, auth=("alice", "s3cret-pass")) for p in ("/metrics", "/", "/-/ready", "/nope")]
        answers += [await client.get("/-/healthy"), await client.get("/metrics"), await client.head("/metrics")]
    assert [r.status_code for r in answers] == [200, 200, 503, 404, 200, 401, 401]
    for r in answers:
        assert {k: r.headers.get(k) for k in expected} == expected, r.request.url
        assert "X-XSS-Protection" not in r.headers  # blank means unset


@pytest.mark.asyncio
async def test_configured_headers_are_on_every_response_of_the_app(tmp_path: Path, ca: trustme.CA) -> None:
    from aiohttp import web

    web_config = load_web_config(write_web_config(tmp_path, ca, HEADERS))
    exporter = Exporter(build_config({"sources": [SOURCE]}, "t", {}))
    app = make_app(exporter, web_config)
    app.on_response_prepare.append(response_headers(web_config))  # the line make_app is to gain
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        await assert_headers_on_every_response(f"http://127.0.0.1:{runner.addresses[0][1]}")
    finally:
        await runner.cleanup()
        await exporter.aclose()


@pytest.mark.asyncio
async def test_configured_headers_are_on_every_response_of_the_server(tmp_path: Path, ca: trustme.CA) -> None:
    exporter, runner, url = await serve(write_web_config(tmp_path, ca, TLS_AND_AUTH + HEADERS.split("basic_auth")[0]))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    try:
        await assert_headers_on_every_response(url, client)
    finally:
        await runner.cleanup()
        await exporter.aclose()
