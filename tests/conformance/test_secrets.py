"""No configured secret, in any form a vendor may echo it in, reaches /metrics, the status page or the log,
even from a vendor that echoes each request's credentials in its error body (echo_vendor.EchoVendor).

Two scenarios per provider: the vendor echoes every request, so the first one (a token request where
there is one, carrying the secret itself) fails with its credentials in the error; or it serves tokens and
names and echoes only the data requests, which carry what the token request gave (or a signature).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest
from pydantic import SecretStr

from aht_exporter.clock import FakeClock
from aht_exporter.config import Config, SourceConfig, secret_keys
from aht_exporter.logs import install_redactor, setup_logging
from aht_exporter.providers import PROVIDERS
from aht_exporter.scheduler import Exporter
from aht_exporter.server import start_server
from aht_exporter.simulator.demo import demo_config, demo_workload
from tests.conformance.cases import NAMES, demo_of
from tests.conformance.echo_vendor import MARKER, EchoVendor
from tests.helpers import T0
from tests.unit.test_secret_forms import basic_forms, encoded_forms, pieces

pytestmark = pytest.mark.asyncio

LIMIT = 60.0  # seconds for a whole scenario: one failing poll of a loopback vendor takes well under one
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def distinctive(key: str) -> str:
    """A secret whose encoded forms all differ from it (URL-reserved characters, a `%`), unique per key."""
    return f"Sx+{zlib.crc32(key.encode()):08x}/w=q&z?%41:7f3a9c2e"


def shown(text: str, secret: str, public: list[str]) -> list[str]:
    """The forms of `secret` in `text` (tests/unit/test_secret_forms.py writes them out; for HTTP Basic,
    paired with any public text of the config), and its 12-character pieces, except pieces the config
    shows anyway (the demo's "demo-ozonetel-api-key" shares "demo-ozonetel" with its source's name)."""
    forms = encoded_forms(secret) | {k: v for user in public for k, v in basic_forms(user, secret).items()}
    found = [f"{name}: {form}" for name, form in forms.items() if form in text]
    found += [
        f"piece: {piece}"
        for form in (secret, quote_plus(secret))
        for piece in pieces(form)
        if piece in text and not any(piece in p for p in public)
    ]
    return found


def runtime_credentials(header_values: list[str]) -> set[str]:
    """The tokens and signed JWTs the clients sent: a bare header value, or what follows `Bearer`. (A
    request signature, SigV4's or OAuth 1.0a's, is bound to its one request and left out.)"""
    out = set()
    for value in header_values:
        scheme, _, rest = value.partition(" ")
        token = rest if scheme.lower() == "bearer" else value if not rest else ""
        if len(token) >= 16:
            out.add(token)
    return out


def with_secrets(source: dict[str, Any], model: type[SourceConfig]) -> dict[str, Any]:
    return {k: distinctive(k) if k in secret_keys(model) else v for k, v in source.items()}


def secrets_and_public(config: Config) -> tuple[list[str], list[str]]:
    """Every configured secret, and every other text of the config a vendor could pair one with in a
    Basic credential (client ids, user names, account ids)."""
    secrets, users = [], []
    for source in config.sources:
        for key in type(source).model_fields:
            value = getattr(source, key)
            if isinstance(value, SecretStr):
                secrets.append(value.get_secret_value())
            elif isinstance(value, str):
                users.append(value)
    return secrets, users


@dataclass
class Seen:
    texts: dict[str, str]  # where -> what a user sees there
    errors: list[str]  # each source's last error
    echoed: list[str]  # what the vendor echoed
    credentials: list[str]  # the credential header values of the requests it echoed


async def run(name: str, everything: bool, caplog: pytest.LogCaptureFixture) -> tuple[Config, Seen]:
    demo = demo_of(name)
    clock = FakeClock(T0)
    model = PROVIDERS[name].config_model
    # The daemon's own log, at debug level, through its own formatter and redactor (tests/conftest.py puts
    # the root logger back afterwards); and the records as the other tests see them.
    setup_logging("debug", "logfmt")
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    logging.getLogger().addHandler(caplog.handler)
    async with contextlib.AsyncExitStack() as stack, asyncio.timeout(LIMIT):
        sim = demo.make(demo_workload(), clock)
        sim_url = await sim.start("127.0.0.1", 0)
        stack.push_async_callback(sim.stop)
        data_paths = sim.faults.forms.data_paths
        echo: Callable[[str], bool] = (lambda path: True) if everything else (lambda path: path.startswith(data_paths))
        vendor = EchoVendor(sim_url, echo)
        stack.push_async_callback(vendor.stop)
        url = await vendor.start()
        config = demo_config([with_secrets(s, model) if everything else s for s in demo.sources(url)])
        exporter = Exporter(config, clock=clock)
        stack.push_async_callback(exporter.aclose)
        install_redactor(exporter.redactor)
        server, bound = await start_server(exporter, "127.0.0.1:0")
        stack.push_async_callback(server.cleanup)
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=f"http://{bound[0]}"))
        assert not await exporter.poll_all(), "every source fails on the echoing vendor"
        await exporter.rendered_now()
        texts = {
            "/metrics": (await client.get("/metrics")).text,
            "/metrics (OpenMetrics)": (await client.get("/metrics", headers={"Accept": OPENMETRICS})).text,
            "status page": (await client.get("/")).text,
        }
    texts["log"] = stream.getvalue()
    texts["log records"] = caplog.text
    errors = [r.health.last_error or "" for r in exporter.runners]
    return config, Seen(texts, errors, vendor.echoed, vendor.credentials)


@pytest.mark.parametrize("everything", [True, False], ids=["every-request-echoed", "data-requests-echoed"])
@pytest.mark.parametrize("name", NAMES)
async def test_a_vendor_echoing_credentials_shows_no_secret(
    name: str, everything: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config, seen = await run(name, everything, caplog)
    assert seen.echoed, "the vendor was asked nothing"
    # Not a vacuous pass: each source's error is the echo, with a credential in it masked.
    for error in seen.errors:
        assert MARKER in error and "<redacted>" in error, f"the echo is not what the source shows: {error!r}"
    assert MARKER in seen.texts["status page"]
    assert "poll failed" in seen.texts["log"] and "poll failed" in seen.texts["log records"]
    secrets, public = secrets_and_public(config)
    assert secrets, f"{name}'s demo source configures no secret"
    tokens = runtime_credentials(seen.credentials) - set(secrets)
    leaks = {
        where: [
            *(f for secret in secrets for f in shown(text, secret, public)),
            *(f"token piece: {p}" for t in tokens for p in pieces(t) if p in text and not any(p in x for x in public)),
        ]
        for where, text in seen.texts.items()
    }
    assert not {where: found for where, found in leaks.items() if found}
