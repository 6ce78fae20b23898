"""A secret is masked in every form a vendor can echo it in, in every text that leaves the process (issue 12).

The forms are written out here with the standard library, not taken from the Redactor: raw, URL-encoded
(quote and quote_plus, upper and lower case hex), JSON-escaped, HTML-escaped, the HTTP Basic credential
base64(id:secret), the secret inside any other base64 text, and any 12-character piece of a runtime token.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
import respx

from aht_exporter.clock import FakeClock
from aht_exporter.health import SourceHealth
from aht_exporter.httpclient import ApiClient
from aht_exporter.logs import install_redactor, setup_logging
from aht_exporter.model import ProviderError
from aht_exporter.providers.genesys import GenesysConfig, GenesysProvider
from aht_exporter.providers.liveperson import LivePersonConfig, LivePersonProvider
from aht_exporter.providers.ozonetel import OzonetelConfig, OzonetelProvider
from aht_exporter.redact import RUNTIME, Redactor, RuntimeSecrets
from aht_exporter.registry import build_config
from aht_exporter.scheduler import SourceRunner
from aht_exporter.timebuckets import parse_iso
from tests.helpers import T0, RecordingSleep
from tests.unit.genesys_config import LOGIN

SECRET = "LpSecret+with/special=chars&x"  # the issue's own: every URL-reserved character it could hold
CLIENT_ID = "client-123"
# A runtime token as vendors issue them (a JWT), made up here: nothing in the config knows it.
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJvem9uZXRlbC1ydW50aW1lIn0.Qk7xR2mVt9LwZp4sNc8HdYe3"
NINE = int(parse_iso("2026-03-02T09:00:00Z"))
OZ = "https://in1-ccaas-api.ozonetel.com"
OZ_KEY = "oz-key-Q7w9e2Lm"


def hex_lower(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def encoded_forms(secret: str) -> dict[str, str]:
    """Each form a vendor may echo `secret` in, by name."""
    forms = {
        "raw": secret,
        "quote": quote(secret, safe=""),
        "quote, default safe": quote(secret),
        "quote_plus": quote_plus(secret),
        "JSON": json.dumps(secret)[1:-1],
        "JSON, escaped slash": json.dumps(secret)[1:-1].replace("/", "\\/"),
        "HTML": html.escape(secret),
        "base64": b64(secret),
        "base64url, unpadded": base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="),
    }
    forms |= {f"{name}, lower hex": hex_lower(form) for name, form in list(forms.items()) if "%" in form}
    return forms


def basic_forms(user: str, secret: str) -> dict[str, str]:
    return {
        "Basic": b64(f"{user}:{secret}"),
        "Basic, unpadded": b64(f"{user}:{secret}").rstrip("="),
        "Basic, urlsafe": base64.urlsafe_b64encode(f"{user}:{secret}".encode()).decode(),
    }


def pieces(secret: str, size: int = 12) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def assert_absent(text: str, secret: str, *, user: str | None = None) -> None:
    """Not one form of `secret`, nor a 12-character piece of its raw or URL-encoded form, is in `text`."""
    forms = encoded_forms(secret) | (basic_forms(user, secret) if user else {})
    shown = {name: form for name, form in forms.items() if form in text}
    assert not shown, f"{shown} in {text!r}"
    leaked = [p for form in (secret, quote_plus(secret)) for p in pieces(form) if p in text]
    assert not leaked, f"{leaked} in {text!r}"


@pytest.fixture
def runtime() -> RuntimeSecrets:
    return RuntimeSecrets()


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as m:
        yield m


# --- the Redactor, form by form ------------------------------------------------------------------------------


@pytest.mark.parametrize(("form", "echo"), sorted((encoded_forms(SECRET) | basic_forms(CLIENT_ID, SECRET)).items()))
def test_a_configured_secret_is_masked_in_every_form(form: str, echo: str, runtime: RuntimeSecrets) -> None:
    redact = Redactor([SECRET], basic=[(CLIENT_ID, SECRET)], runtime=runtime)
    assert redact(f'{{"detail": "refused {echo} here"}}') == '{"detail": "refused <redacted> here"}'


@pytest.mark.parametrize("offset", [0, 1, 2, 5])
def test_a_secret_inside_any_base64_text_is_masked_whatever_its_alignment(offset: int, runtime: RuntimeSecrets) -> None:
    """A vendor may echo a whole encoded structure (a header dump, a form body in base64)."""
    blob = b64("p" * offset + f"client_secret={SECRET}&grant_type=client_credentials")
    masked = Redactor([SECRET], runtime=runtime)(f"body {blob} end")
    assert "<redacted>" in masked
    # What is left of the blob, decoded at any alignment, holds no six-byte part of the secret.
    for run in re.findall(r"[A-Za-z0-9+/=]{4,}", masked.replace("<redacted>", " ")):
        for start in range(4):
            part = run[start:].rstrip("=")
            decoded = base64.b64decode(part[: len(part) // 4 * 4]).decode("latin-1")
            assert not any(p in decoded for p in pieces(SECRET, 6)), (run, decoded)


def test_a_piece_of_a_secret_twelve_characters_long_is_masked_and_a_shorter_one_is_not(
    runtime: RuntimeSecrets,
) -> None:
    redact = Redactor([SECRET], runtime=runtime)
    cut = SECRET[3:15]
    assert redact(f"reply cut at '{cut}'") == "reply cut at '<redacted>'"
    assert redact(f"reply cut at '{cut[:11]}'") == f"reply cut at '{cut[:11]}'"
    assert redact(f"url-encoded, cut: {quote_plus(SECRET)[:14]}") == "url-encoded, cut: <redacted>"


def test_ordinary_text_and_short_secrets_are_left_alone(runtime: RuntimeSecrets) -> None:
    redact = Redactor(["abc", SECRET], runtime=runtime)
    text = "POST /oauth/token: HTTP 401: invalid_client: Client authentication failed (abc)"
    assert redact(text) == text


def test_a_run_of_padding_inside_a_token_does_not_mask_padding_elsewhere(runtime: RuntimeSecrets) -> None:
    runtime.add("eyJ" + "x" * 20 + "Qk7xR2mVt9Lw")
    assert Redactor([], runtime=runtime)('{"pad": "xxxxxxxxxxxxxxxxxxxx"}') == '{"pad": "xxxxxxxxxxxxxxxxxxxx"}'


def test_the_config_redactor_knows_each_sources_basic_credential() -> None:
    source = {"name": "g", "provider": "genesys", "region": "mypurecloud.ie", "client_id": CLIENT_ID}
    config = build_config({"sources": [source | {"client_secret": SECRET}]}, "t.yaml", {})
    redact = Redactor.for_config(config, runtime=None)
    for echo in basic_forms(CLIENT_ID, SECRET).values():
        assert redact(f"Authorization: Basic {echo}") == "Authorization: Basic <redacted>"


def test_a_piece_of_a_secret_that_the_configs_public_text_holds_is_not_masked() -> None:
    # The demo's Ozonetel key began with its source's name: every log line said source=<redacted>.
    source = {"name": "demo-ozonetel", "provider": "ozonetel", "user_name": "demo", "agents": ["a1"]}
    config = build_config({"sources": [source | {"api_key": "demo-ozonetel-api-key"}]}, "t.yaml", {})
    runtime = RuntimeSecrets()
    runtime.add("demo-ozonetel-api-key")  # the client registers the apiKey header it sends
    for redact in (Redactor.for_config(config, runtime=None), Redactor.for_config(config, runtime=runtime)):
        assert redact("poll ok source=demo-ozonetel series=7") == "poll ok source=demo-ozonetel series=7"
        assert redact("echo: demo-ozonetel-api-key") == "echo: <redacted>"
        assert redact("cut: ...onetel-api-ke") == "cut: ...<redacted>"  # a piece the public text lacks


@pytest.mark.parametrize(
    ("form", "echo"),
    [
        ("raw", TOKEN),
        ("JSON", json.dumps(TOKEN)[1:-1]),
        ("quote", quote(TOKEN, safe="")),
        ("head", TOKEN[:12]),
        ("middle", TOKEN[30:55]),
        ("tail", TOKEN[-12:]),
    ],
)
def test_a_runtime_token_is_masked_whole_and_in_pieces_once_known(
    form: str, echo: str, runtime: RuntimeSecrets
) -> None:
    redact = Redactor([], runtime=runtime)
    assert redact(f"token {echo} refused") == f"token {echo} refused"  # not known yet
    runtime.add(TOKEN)
    assert redact(f"token {echo} refused") == "token <redacted> refused"


def test_runtime_tokens_too_short_to_be_credentials_are_ignored_and_the_oldest_are_forgotten() -> None:
    runtime = RuntimeSecrets(capacity=2)
    redact = Redactor([], runtime=runtime)
    runtime.add("tok-1")  # a test's token, not a credential: masking it would garble messages
    tokens = [f"{TOKEN}-{i}" for i in range(3)]
    for token in tokens:
        runtime.add(token)
    assert redact("tok-1") == "tok-1"
    assert tokens[0] not in runtime and tokens[1] in runtime and tokens[2] in runtime
    assert redact(f"a {tokens[2]} b") == "a <redacted> b"


# --- (a) Genesys: a token endpoint's 401 echoing the Basic header ------------------------------------------------


def genesys_setup(**overrides: Any) -> tuple[GenesysProvider, SourceRunner]:
    source = {"name": "genesys-eu", "provider": "genesys", "region": "mypurecloud.ie", "client_id": CLIENT_ID}
    config = build_config({"sources": [source | {"client_secret": SECRET, **overrides}]}, "t.yaml", {})
    health = SourceHealth("genesys-eu", "genesys", 3)
    assert isinstance(config.sources[0], GenesysConfig)
    provider = GenesysProvider(config.sources[0], health, sleep=RecordingSleep())
    clock = FakeClock(NINE + 6 * 60)
    return provider, SourceRunner(config.sources[0], provider, clock=clock, redactor=Redactor.for_config(config))


@pytest.mark.asyncio
async def test_a_genesys_token_401_echoing_the_basic_header_shows_no_form_of_it(mock: respx.MockRouter) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        sent = request.headers["Authorization"]
        return httpx.Response(401, json={"error": "invalid_client", "description": f"bad Authorization: {sent}"})

    token = mock.post(f"{LOGIN}/oauth/token").mock(side_effect=echo)
    provider, runner = genesys_setup()

    with pytest.raises(ProviderError) as info:
        await provider.fetch(NINE, NINE + 3600)
    assert not await runner.poll()
    await provider.aclose()

    assert token.calls[0].request.headers["Authorization"] == f"Basic {b64(f'{CLIENT_ID}:{SECRET}')}"
    assert (
        str(info.value) == "token request to login.mypurecloud.ie "
        "POST /oauth/token: HTTP 401: invalid_client: bad Authorization: Basic <redacted>"
    )
    for text in (str(info.value), runner.health.last_error or ""):
        assert_absent(text, SECRET, user=CLIENT_ID)


# --- (b) LivePerson: a sentinel 401 echoing the form body ---------------------------------------------------------


@pytest.mark.asyncio
async def test_a_liveperson_sentinel_401_echoing_the_form_body_shows_no_form_of_the_secret(
    mock: respx.MockRouter,
) -> None:
    sentinel = "https://va.sentinel.liveperson.net"

    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"message": f"cannot authenticate {request.content.decode()}"})

    token = mock.post(sentinel + "/sentinel/api/v2/account/12345678/app/token").mock(side_effect=echo)
    raw = {"name": "lp", "provider": "liveperson", "account_id": "12345678", "client_id": "client-lp"}
    urls = {"sentinel_url": sentinel, "base_url": "https://va.data.liveperson.net"}
    config = build_config({"sources": [raw | urls | {"client_secret": SECRET}]}, "t.yaml", {})
    source = config.sources[0]
    assert isinstance(source, LivePersonConfig)
    provider = LivePersonProvider(
        source, SourceHealth("lp", "liveperson", 3), clock=FakeClock(NINE), sleep=RecordingSleep()
    )
    runner = SourceRunner(source, provider, clock=FakeClock(NINE + 7 * 60), redactor=Redactor.for_config(config))

    with pytest.raises(ProviderError) as info:
        await provider.fetch(NINE - 600, NINE)
    assert not await runner.poll()
    await provider.aclose()

    assert quote_plus(SECRET) in token.calls[0].request.content.decode()  # what the vendor echoed
    token_path = "/sentinel/api/v2/account/12345678/app/token"
    assert str(info.value).startswith(f"token request to va.sentinel.liveperson.net POST {token_path}: HTTP 401:")
    for text in (str(info.value), runner.health.last_error or ""):
        assert "<redacted>" in text
        assert_absent(text, SECRET)


# --- (c), (d) Ozonetel: a 2xx error echoing the runtime token; a token reply cut short ---------------------------


def ozonetel_setup() -> tuple[OzonetelProvider, SourceRunner]:
    raw = {"name": "oz", "provider": "ozonetel", "user_name": "acme", "api_key": OZ_KEY, "agents": ["a1"]}
    config = build_config({"sources": [raw]}, "t.yaml", {})
    source = config.sources[0]
    assert isinstance(source, OzonetelConfig)
    provider = OzonetelProvider(source, SourceHealth("oz", "ozonetel", 3), clock=FakeClock(T0), sleep=RecordingSleep())
    return provider, SourceRunner(source, provider, clock=FakeClock(T0), redactor=Redactor.for_config(config))


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_an_ozonetel_200_error_echoing_the_runtime_token_shows_no_part_of_it(mock: respx.MockRouter) -> None:
    token = mock.post(f"{OZ}/ca_apis/CAToken/generateToken").mock(
        return_value=httpx.Response(200, json={"token": TOKEN, "message": ""})
    )
    echo = f"Bearer {TOKEN} is not valid for this account (first seen as {TOKEN[:20]})"
    aht = mock.post(f"{OZ}/ca_apis/aht").mock(
        return_value=httpx.Response(200, json={"status": "false", "message": echo})
    )
    provider, runner = ozonetel_setup()

    with pytest.raises(ProviderError) as info:
        await provider.fetch_averages()
    assert not await runner.poll()
    await provider.aclose()

    assert token.calls[0].request.headers["apiKey"] == OZ_KEY
    assert aht.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert (
        str(info.value) == "data request to in1-ccaas-api.ozonetel.com "
        "POST /ca_apis/aht for agent 'a1': Bearer <redacted> is not valid for this account (first seen as <redacted>)"
    )
    for text in (str(info.value), runner.health.last_error or ""):
        assert_absent(text, TOKEN)


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_truncated_ozonetel_token_reply_shows_no_part_of_the_token(mock: respx.MockRouter) -> None:
    cut = b'{"token": "' + TOKEN.encode()[:40]  # the connection dropped mid-reply
    token = mock.post(f"{OZ}/ca_apis/CAToken/generateToken").mock(return_value=httpx.Response(200, content=cut))
    aht = mock.post(f"{OZ}/ca_apis/aht")
    provider, runner = ozonetel_setup()

    with pytest.raises(ProviderError) as info:
        await provider.fetch_averages()
    assert not await runner.poll()
    await provider.aclose()

    assert token.call_count == 2 and not aht.called
    assert str(info.value) == (
        "token request to in1-ccaas-api.ozonetel.com "
        "POST /ca_apis/CAToken/generateToken: response is not JSON (HTTP 200; not shown: it may hold a credential)"
    )
    for text in (str(info.value), runner.health.last_error or ""):
        assert_absent(text, TOKEN[:40])


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_token_endpoints_error_text_masks_what_looks_like_a_token(mock: respx.MockRouter) -> None:
    body = f"internal error after issuing {TOKEN[:44]}"
    mock.post(f"{OZ}/ca_apis/CAToken/generateToken").mock(return_value=httpx.Response(400, text=body))
    provider, _ = ozonetel_setup()

    with pytest.raises(ProviderError) as info:
        await provider.fetch_averages()
    await provider.aclose()

    assert (
        str(info.value) == "token request to in1-ccaas-api.ozonetel.com "
        "POST /ca_apis/CAToken/generateToken: HTTP 400: internal error after issuing <redacted>"
    )


# --- log lines ------------------------------------------------------------------------------------------------


@pytest.fixture
def root() -> Iterator[None]:
    logger = logging.getLogger()
    handlers, level = logger.handlers[:], logger.level
    yield
    logger.handlers[:], logger.level = handlers, level


@pytest.mark.asyncio
async def test_a_token_the_client_sent_is_masked_in_log_lines(
    root: None, mock: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    """The log formatter's Redactor is built from the config alone, at start: it learns what the
    clients send through the process's runtime registry."""
    token = f"{TOKEN}.log-line"
    setup_logging("info", "logfmt")
    source = {"name": "g", "provider": "genesys", "region": "mypurecloud.ie", "client_id": CLIENT_ID}
    install_redactor(Redactor.for_config(build_config({"sources": [source | {"client_secret": SECRET}]}, "t", {})))
    route = mock.get("https://api.example.com/x").mock(return_value=httpx.Response(200, json={}))
    api = ApiClient(counter=SourceHealth("g", "genesys", 3), timeout=5)
    await api.request("GET", "https://api.example.com/x", endpoint="x", headers={"Authorization": f"Bearer {token}"})
    await api.aclose()
    assert route.calls[0].request.headers["Authorization"] == f"Bearer {token}"
    assert token in RUNTIME

    logging.getLogger("aht_exporter").warning("vendor said %s", f"token {token[5:40]} expired", extra={"source": "g"})
    err = capsys.readouterr().err
    assert "vendor said token <redacted> expired" in err
    assert not [p for p in pieces(token) if p in err]
