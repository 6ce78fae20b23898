"""The LivePerson provider over mocked HTTP: exact requests, both auths, and every failure path."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import respx
from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth1.rfc5849 import signature, utils

from aht_exporter.clock import FakeClock
from aht_exporter.health import SourceHealth
from aht_exporter.model import Field, ProviderError, RateLimited, make_labels
from aht_exporter.providers.liveperson import LivePersonProvider
from aht_exporter.registry import build_config
from aht_exporter.scheduler import Exporter
from aht_exporter.timebuckets import parse_iso
from tests.helpers import RecordingSleep, fixture, parse_exposition
from tests.unit.test_liveperson_config import CONSUMER_SECRET, OAUTH1, SECRET, TOKEN_SECRET, liveperson_config

TEN = int(parse_iso("2026-03-02T10:00:00Z"))
NOW = TEN + 7 * 60  # a poll at 10:07 works up to the 10:05 boundary
START, END = TEN - 600, TEN + 300  # 09:50 .. 10:05
ACCOUNT = "12345678"
CSDS = "https://api.liveperson.net"
API = "https://va.data.liveperson.net"
SENTINEL = "https://va.sentinel.liveperson.net"
LOOKUP = CSDS + "/api/account/12345678/service/{service}/baseURI.json"
# [doc] API V2 as the OAuth 2.0 client-credentials page writes it: the default `token_version`.
TOKEN = SENTINEL + "/sentinel/api/v2/account/12345678/app/token"
# [doc] The unversioned path: V1 with `v=1.0`, or V2 with `v=2.0` as LivePerson's Functions client asks.
TOKEN_UNVERSIONED = SENTINEL + "/sentinel/api/account/12345678/app/token"
ENGACTIVITY = API + "/operations/api/account/12345678/engactivity"
# 17 minutes back from 10:07 to 09:50 -> 20 whole minutes of intervals, + one spare interval
QUERY = "timeframe=25&v=1&interval=5&skillIds=all"


def make(
    clock: FakeClock | None = None, **overrides: Any
) -> tuple[LivePersonProvider, SourceHealth, RecordingSleep, FakeClock]:
    clock = clock or FakeClock(NOW)
    health = SourceHealth("lp-main", "liveperson", 3)
    sleep = RecordingSleep()
    config = liveperson_config(**{"group_by": ["queue", "agent"], **overrides})
    return LivePersonProvider(config, health, clock=clock, sleep=sleep), health, sleep, clock


def lookup_reply(service: str, host: str) -> httpx.Response:
    return httpx.Response(200, json={"service": service, "account": ACCOUNT, "baseURI": host})


def token_reply(token: str = "tok-1") -> httpx.Response:
    return httpx.Response(200, json={"access_token": token, "token_type": "Bearer"})


def engactivity_reply() -> httpx.Response:
    return httpx.Response(200, json=fixture("liveperson_intervals_skills.json"))


@pytest.fixture
def mock() -> Any:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as m:
        yield m


@pytest.fixture
def lookups(mock: respx.MockRouter) -> dict[str, respx.Route]:
    return {
        "data": mock.get(LOOKUP.format(service="leDataReporting")).mock(
            return_value=lookup_reply("leDataReporting", "va.data.liveperson.net")
        ),
        "sentinel": mock.get(LOOKUP.format(service="sentinel")).mock(
            return_value=lookup_reply("sentinel", "va.sentinel.liveperson.net")
        ),
    }


@pytest.mark.asyncio
async def test_fetch_looks_up_domains_gets_a_token_and_asks_engactivity_exactly(
    mock: respx.MockRouter, lookups: dict[str, respx.Route]
) -> None:
    token = mock.post(TOKEN).mock(return_value=token_reply())
    engactivity = mock.get(ENGACTIVITY).mock(return_value=engactivity_reply())
    provider, health, _, _ = make()

    buckets = await provider.fetch(START, END)

    for route in lookups.values():
        lreq = route.calls[0].request
        assert lreq.url.params["version"] == "1.0"
        assert "Authorization" not in lreq.headers  # the Domain API is public: no credential leaves for it
    treq = token.calls[0].request
    assert (treq.method, str(treq.url)) == ("POST", TOKEN)  # V2 by its path, no query at all
    assert treq.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "Authorization" not in treq.headers
    assert parse_qsl(treq.content.decode()) == [
        ("client_id", "client-lp"),
        ("client_secret", SECRET),
        ("grant_type", "client_credentials"),
    ]
    ereq = engactivity.calls[0].request
    assert str(ereq.url) == f"{ENGACTIVITY}?{QUERY}"
    assert ereq.method == "GET"
    assert ereq.headers["Authorization"] == "Bearer tok-1"
    assert ereq.headers["User-Agent"].startswith("aht-exporter/")
    assert SECRET not in str(ereq.url) and SECRET not in str(treq.url)
    assert {(b.start, b.labels): b.values[Field.HANDLE_TIME] for b in buckets} == {
        (TEN, make_labels(media_type="chat", queue="12", agent="3")): 300.0,
        (TEN, make_labels(media_type="chat", queue="12", agent="8")): 95.0,
        (TEN, make_labels(media_type="chat", queue="-1", agent="7")): 0.0,
        (TEN - 600, make_labels(media_type="chat", queue="12", agent="8")): 420.0,
    }
    assert health.api_requests == {("domain", "200"): 2, ("token", "200"): 1, ("engactivity", "200"): 1}
    assert provider.fields == frozenset({Field.HANDLE_TIME, Field.CONTACTS_HANDLED})
    await provider.aclose()


@pytest.mark.asyncio
async def test_domains_and_the_token_are_cached_and_domains_refreshed_daily(
    mock: respx.MockRouter, lookups: dict[str, respx.Route]
) -> None:
    token = mock.post(TOKEN).mock(return_value=token_reply())
    mock.get(ENGACTIVITY).mock(return_value=engactivity_reply())
    provider, _, _, clock = make()
    await provider.fetch(START, END)
    await provider.fetch(START, END)
    assert [r.call_count for r in lookups.values()] == [1, 1]
    assert token.call_count == 1
    clock.advance(86400)
    mock.get(ENGACTIVITY).mock(
        side_effect=lambda request: httpx.Response(200, json={"metricsByIntervals": [], "metricsTotals": {}})
    )
    with pytest.raises(ProviderError):
        await provider.fetch(START, END)  # a day later nothing is in the span; the lookups were made again
    assert [r.call_count for r in lookups.values()] == [2, 2]
    await provider.aclose()


@pytest.mark.asyncio
async def test_domain_and_urls_in_the_config_skip_the_lookups(mock: respx.MockRouter) -> None:
    mock.post("https://lo.sentinel.liveperson.net/sentinel/api/v2/account/12345678/app/token").mock(
        return_value=token_reply()
    )
    engactivity = mock.get("https://lo.data.liveperson.net/operations/api/account/12345678/engactivity").mock(
        return_value=engactivity_reply()
    )
    provider, _, _, _ = make(domain="lo.data.liveperson.net", sentinel_url="https://lo.sentinel.liveperson.net/")
    await provider.fetch(START, END)
    assert engactivity.call_count == 1  # and no lookup route exists: respx would have refused it
    await provider.aclose()


@pytest.mark.asyncio
async def test_base_url_overrides_the_api_address_entirely(
    mock: respx.MockRouter, lookups: dict[str, respx.Route]
) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    engactivity = mock.get("https://proxy.example/lp/operations/api/account/12345678/engactivity").mock(
        return_value=engactivity_reply()
    )
    provider, _, _, _ = make(base_url="https://proxy.example/lp/")
    await provider.fetch(START, END)
    assert engactivity.call_count == 1
    assert lookups["data"].call_count == 0
    await provider.aclose()


@pytest.mark.parametrize(
    ("overrides", "query"),
    [
        ({"group_by": []}, "timeframe=25&v=1&interval=5"),
        ({"group_by": ["agent"]}, "timeframe=25&v=1&interval=5&agentIds=all"),
        ({"group_by": ["queue"], "skills": [12, -1]}, "timeframe=25&v=1&interval=5&skillIds=12,-1"),
        (
            {"group_by": ["agent"], "skills": ["12"], "agents": [3, 8]},
            "timeframe=25&v=1&interval=5&skillIds=12&agentIds=3,8",
        ),
    ],
)
@pytest.mark.asyncio
async def test_each_grouping_asks_for_its_ids(mock: respx.MockRouter, overrides: dict[str, Any], query: str) -> None:
    engactivity = mock.get(ENGACTIVITY).mock(return_value=httpx.Response(200, json={"metricsByIntervals": []}))
    provider, _, _, _ = make(**{**OAUTH1, "domain": "va.data.liveperson.net", **overrides})
    with pytest.raises(ProviderError, match="no interval ends at"):
        await provider.fetch(START, END)
    assert str(engactivity.calls[0].request.url) == f"{ENGACTIVITY}?{query}"
    await provider.aclose()


@pytest.mark.asyncio
async def test_oauth1_signs_the_full_url_with_hmac_sha1(
    mock: respx.MockRouter, lookups: dict[str, respx.Route]
) -> None:
    engactivity = mock.get(ENGACTIVITY).mock(return_value=engactivity_reply())
    provider, health, _, _ = make(**OAUTH1)
    await provider.fetch(START, END)
    assert lookups["sentinel"].call_count == 0  # no sentinel with OAuth 1.0a
    request = engactivity.calls[0].request
    header = request.headers["Authorization"]
    assert header.startswith("OAuth ")
    params = dict(utils.parse_authorization_header(header))
    assert params["oauth_consumer_key"] == "ck-1"
    assert params["oauth_token"] == "tok-1"
    assert params["oauth_signature_method"] == "HMAC-SHA1"
    assert params["oauth_version"] == "1.0"
    assert params["oauth_nonce"] and params["oauth_timestamp"].isdigit()
    assert CONSUMER_SECRET not in header and TOKEN_SECRET not in header
    # Recompute the signature server-side: it covers the query string.
    signed = OAuthRequest(str(request.url), http_method="GET", headers={"Authorization": header})
    signed.params = signature.collect_parameters(
        uri_query=request.url.query.decode(), headers={"Authorization": header}
    )
    signed.signature = utils.unescape(params["oauth_signature"])
    assert signature.verify_hmac_sha1(signed, CONSUMER_SECRET, TOKEN_SECRET)
    tampered = OAuthRequest(str(request.url).replace("timeframe=25", "timeframe=30"), headers={"Authorization": header})
    tampered.params = signature.collect_parameters(
        uri_query=request.url.query.decode().replace("timeframe=25", "timeframe=30"), headers={"Authorization": header}
    )
    tampered.signature = signed.signature
    assert not signature.verify_hmac_sha1(tampered, CONSUMER_SECRET, TOKEN_SECRET)
    assert health.api_requests == {("domain", "200"): 1, ("engactivity", "200"): 1}
    await provider.aclose()


@pytest.mark.asyncio
async def test_oauth1_retries_are_signed_afresh(mock: respx.MockRouter, lookups: dict[str, respx.Route]) -> None:
    engactivity = mock.get(ENGACTIVITY).mock(side_effect=[httpx.Response(503), engactivity_reply()])
    provider, _, _, _ = make(**OAUTH1)
    await provider.fetch(START, END)
    nonces = [
        dict(utils.parse_authorization_header(c.request.headers["Authorization"]))["oauth_nonce"]
        for c in engactivity.calls
    ]
    assert len(set(nonces)) == 2
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_400_surfaces_the_vendor_message_and_is_not_retried(
    mock: respx.MockRouter, lookups: dict[str, respx.Route]
) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    engactivity = mock.get(ENGACTIVITY).mock(
        return_value=httpx.Response(
            400, json={"message": "interval must be a divisor of timeframe", "internalCode": 10}
        )
    )
    provider, _, sleep, _ = make()
    with pytest.raises(ProviderError) as info:
        await provider.fetch(START, END)
    assert str(info.value) == (
        "data request to va.data.liveperson.net "
        "GET /operations/api/account/12345678/engactivity: HTTP 400: 10: interval must be a divisor of timeframe"
    )
    assert info.value.status == 400
    assert engactivity.call_count == 1
    assert sleep.waits == []
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_400_in_plain_text_is_surfaced_too(mock: respx.MockRouter, lookups: dict[str, respx.Route]) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.get(ENGACTIVITY).mock(return_value=httpx.Response(400, text="Bad Request: timeframe exceeds 1440"))
    provider, _, _, _ = make()
    with pytest.raises(ProviderError, match=r"HTTP 400: Bad Request: timeframe exceeds 1440$"):
        await provider.fetch(START, END)
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_401_refreshes_the_oauth2_token_once_and_replays(
    mock: respx.MockRouter, lookups: dict[str, respx.Route]
) -> None:
    token = mock.post(TOKEN).mock(side_effect=[token_reply("old"), token_reply("new")])
    engactivity = mock.get(ENGACTIVITY).mock(
        side_effect=[httpx.Response(401, json={"message": "Unauthorized"}), engactivity_reply()]
    )
    provider, health, _, _ = make()
    assert len(await provider.fetch(START, END)) == 4
    assert token.call_count == 2
    assert [c.request.headers["Authorization"] for c in engactivity.calls] == ["Bearer old", "Bearer new"]
    assert health.api_requests == {
        ("domain", "200"): 2,
        ("token", "200"): 2,
        ("engactivity", "401"): 1,
        ("engactivity", "200"): 1,
    }
    await provider.aclose()


REFUSALS = fixture("liveperson_engactivity_errors.json")


# The token request each `token_version` makes, query included.
TOKEN_URLS = {
    "v2": TOKEN,
    "v2-query": TOKEN_UNVERSIONED + "?v=2.0",
    "v1": TOKEN_UNVERSIONED + "?v=1.0&grant_type=client_credentials",
}


def refusal(name: str) -> httpx.Response:
    return httpx.Response(REFUSALS[name]["status"], json=REFUSALS[name]["body"])


@pytest.mark.parametrize(
    ("token_version", "token_url", "form", "reply"),
    [
        (None, TOKEN_URLS["v2"], [("grant_type", "client_credentials")], "v2"),
        ("v2", TOKEN_URLS["v2"], [("grant_type", "client_credentials")], "v2"),
        ("v2-query", TOKEN_URLS["v2-query"], [("grant_type", "client_credentials")], "v2"),
        ("v1", TOKEN_URLS["v1"], [], "v1"),
    ],
)
@pytest.mark.asyncio
async def test_token_version_picks_the_documented_sentinel_request(
    mock: respx.MockRouter,
    lookups: dict[str, respx.Route],
    token_version: str | None,
    token_url: str,
    form: list[tuple[str, str]],
    reply: str,
) -> None:
    """v2 (the default): the OAuth 2.0 page's API V2 request; v2-query: LivePerson's Functions client's;
    v1: the Connector API's, which the OAuth 2.0 page keeps for the Connector API only."""
    replies = fixture("liveperson_sentinel_token_replies.json")
    token = mock.post(url__startswith=SENTINEL).mock(return_value=httpx.Response(200, json=replies[reply]))
    engactivity = mock.get(ENGACTIVITY).mock(return_value=engactivity_reply())
    provider, health, _, _ = make(token_version=token_version)

    assert len(await provider.fetch(START, END)) == 4

    (call,) = token.calls
    treq = call.request
    assert (treq.method, str(treq.url)) == ("POST", token_url)
    assert treq.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "Authorization" not in treq.headers
    assert parse_qsl(treq.content.decode()) == [("client_id", "client-lp"), ("client_secret", SECRET), *form]
    assert SECRET not in str(treq.url)
    assert engactivity.calls[0].request.headers["Authorization"] == f"Bearer {replies[reply]['access_token']}"
    assert health.api_requests == {("domain", "200"): 2, ("token", "200"): 1, ("engactivity", "200"): 1}
    await provider.aclose()


@pytest.mark.parametrize(
    ("token_version", "others"),
    [(None, "v2-query or v1"), ("v2-query", "v2 or v1"), ("v1", "v2 or v2-query")],
)
@pytest.mark.parametrize(
    ("name", "words", "tokens_after", "bearers"),
    [
        # 401: the auth flow fetches one new token and replays, once, as for an expired token; then gives up.
        # The next poll starts with that new token: refused again, one more new token, and that is all.
        ("401 refused token", "Unauthorized", (2, 3), (["tok-1", "tok-2"], ["tok-2", "tok-3"])),
        # 403: not an expired token, so no new one; the one in hand is kept for its lifetime.
        ("403 refused token", "Access denied", (1, 1), (["tok-1"], ["tok-1"])),
    ],
)
@pytest.mark.asyncio
async def test_engactivity_refusing_the_sentinel_token_fails_in_one_line_saying_what_to_try(
    mock: respx.MockRouter,
    lookups: dict[str, respx.Route],
    token_version: str | None,
    others: str,
    name: str,
    words: str,
    tokens_after: tuple[int, int],
    bearers: tuple[list[str], list[str]],
) -> None:
    token = mock.post(url__startswith=SENTINEL).mock(side_effect=[token_reply(f"tok-{i}") for i in range(1, 4)])
    engactivity = mock.get(ENGACTIVITY).mock(return_value=refusal(name))
    provider, health, sleep, _ = make(token_version=token_version)
    status = REFUSALS[name]["status"]
    version = token_version or "v2"
    for tokens, asked_with in zip(tokens_after, bearers, strict=True):
        engactivity.calls.clear()
        with pytest.raises(ProviderError) as info:
            await provider.fetch(START, END)
        assert str(info.value) == (
            "data request to va.data.liveperson.net "
            f"GET /operations/api/account/12345678/engactivity: HTTP {status}: {words}: engactivity refused the "
            f"OAuth 2.0 token from sentinel (token_version {version}): try token_version: {others}, or OAuth 1.0 "
            "keys (auth: oauth1) if your account still has them; see docs/providers/liveperson.md"
        )
        assert info.value.status == status
        # Never more than one new token per poll for a refusal, and never a retry of the refused request.
        assert token.call_count == health.tokens_issued == tokens  # counted: aht_exporter_tokens_issued_total
        assert [c.request.headers["Authorization"] for c in engactivity.calls] == [f"Bearer {t}" for t in asked_with]
        assert [str(c.request.url) for c in engactivity.calls] == [f"{ENGACTIVITY}?{QUERY}"] * len(asked_with)
    assert [(c.request.method, str(c.request.url)) for c in token.calls] == [("POST", TOKEN_URLS[version])] * tokens
    assert sleep.waits == []
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_refusal_is_one_line_whatever_the_vendor_wrote(
    mock: respx.MockRouter, lookups: dict[str, respx.Route]
) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.get(ENGACTIVITY).mock(return_value=httpx.Response(403, json={"message": "Token\r\nnot  accepted\n"}))
    provider, _, _, _ = make()
    with pytest.raises(ProviderError) as info:
        await provider.fetch(START, END)
    assert str(info.value).startswith(
        "data request to va.data.liveperson.net "
        "GET /operations/api/account/12345678/engactivity: HTTP 403: Token not accepted: engactivity refused the "
        "OAuth 2.0 token from sentinel (token_version v2): try token_version: v2-query or v1"
    )
    assert "\n" not in str(info.value) and "\r" not in str(info.value)
    await provider.aclose()


@pytest.mark.asyncio
async def test_sentinel_refusing_the_refresh_is_not_blamed_on_engactivity(
    mock: respx.MockRouter, lookups: dict[str, respx.Route]
) -> None:
    replies = fixture("liveperson_sentinel_token_replies.json")
    token = mock.post(TOKEN).mock(side_effect=[token_reply("old"), httpx.Response(401, json=replies["invalid_client"])])
    mock.get(ENGACTIVITY).mock(return_value=refusal("401 refused token"))
    provider, _, _, _ = make()
    with pytest.raises(ProviderError) as info:
        await provider.fetch(START, END)
    assert str(info.value) == (
        "token request to va.sentinel.liveperson.net POST /sentinel/api/v2/account/12345678/app/token: HTTP 401: "
        "invalid_client: client authentication failed"
    )
    assert token.call_count == 2
    await provider.aclose()


@pytest.mark.parametrize(
    ("name", "words"), [("401 refused token", "Unauthorized"), ("403 refused token", "Access denied")]
)
@pytest.mark.asyncio
async def test_an_oauth1_refusal_says_nothing_of_sentinel(
    mock: respx.MockRouter, lookups: dict[str, respx.Route], name: str, words: str
) -> None:
    engactivity = mock.get(ENGACTIVITY).mock(return_value=refusal(name))
    provider, _, _, _ = make(**OAUTH1)
    with pytest.raises(ProviderError) as info:
        await provider.fetch(START, END)
    status = REFUSALS[name]["status"]
    assert (
        str(info.value) == "data request to va.data.liveperson.net "
        f"GET /operations/api/account/12345678/engactivity: HTTP {status}: {words}"
    )
    assert engactivity.call_count == 1
    await provider.aclose()


@pytest.mark.asyncio
async def test_an_oauth1_401_fails_at_once(mock: respx.MockRouter, lookups: dict[str, respx.Route]) -> None:
    engactivity = mock.get(ENGACTIVITY).mock(return_value=httpx.Response(401, json={"message": "invalid signature"}))
    provider, _, _, _ = make(**OAUTH1)
    with pytest.raises(ProviderError, match=r"HTTP 401: invalid signature$"):
        await provider.fetch(START, END)
    assert engactivity.call_count == 1
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_429_backs_off_at_least_a_second_with_jitter_then_succeeds(
    mock: respx.MockRouter, lookups: dict[str, respx.Route]
) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.get(ENGACTIVITY).mock(side_effect=[httpx.Response(429), httpx.Response(429), engactivity_reply()])
    provider, health, sleep, _ = make()
    assert len(await provider.fetch(START, END)) == 4
    assert len(sleep.waits) == 2
    assert 1.0 <= sleep.waits[0] <= 2.0  # [doc] at least 1 s; no Retry-After: 1 s plus up to 1 s of jitter
    assert 2.0 <= sleep.waits[1] <= 3.0
    assert health.rate_limited == 2
    assert health.api_requests == {
        ("domain", "200"): 2,
        ("token", "200"): 1,
        ("engactivity", "429"): 2,
        ("engactivity", "200"): 1,
    }
    await provider.aclose()


@pytest.mark.asyncio
async def test_the_429_backoff_is_jittered(mock: respx.MockRouter, lookups: dict[str, respx.Route]) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.get(ENGACTIVITY).mock(return_value=httpx.Response(429))
    provider, _, sleep, _ = make()
    for _ in range(5):
        with pytest.raises(RateLimited):
            await provider.fetch(START, END)
    firsts = sleep.waits[::3]
    assert all(w >= 1.0 for w in sleep.waits)
    assert len(set(firsts)) > 1
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_429_that_persists_fails_as_rate_limited_bounded(
    mock: respx.MockRouter, lookups: dict[str, respx.Route]
) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    engactivity = mock.get(ENGACTIVITY).mock(return_value=httpx.Response(429, json={"message": "Too Many Requests"}))
    provider, _, sleep, _ = make()
    with pytest.raises(RateLimited, match=r"rate limited: Too Many Requests"):
        await provider.fetch(START, END)
    assert engactivity.call_count == 4
    assert len(sleep.waits) == 3 and all(1.0 <= w <= 30.0 for w in sleep.waits)
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_5xx_is_retried(mock: respx.MockRouter, lookups: dict[str, respx.Route]) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.get(ENGACTIVITY).mock(side_effect=[httpx.Response(500), httpx.Response(502), engactivity_reply()])
    provider, health, sleep, _ = make()
    assert len(await provider.fetch(START, END)) == 4
    assert len(sleep.waits) == 2
    assert health.api_requests == {
        ("domain", "200"): 2,
        ("token", "200"): 1,
        ("engactivity", "500"): 1,
        ("engactivity", "502"): 1,
        ("engactivity", "200"): 1,
    }
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_timeout_is_retried_then_fails_and_the_domains_are_looked_up_again(
    mock: respx.MockRouter, lookups: dict[str, respx.Route]
) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    engactivity = mock.get(ENGACTIVITY).mock(side_effect=httpx.ReadTimeout("read timed out"))
    provider, health, _, _ = make()
    with pytest.raises(
        ProviderError,
        match=r"^data request to va\.data\.liveperson\.net GET /operations/api/account/12345678/engactivity: "
        r"timed out$",
    ):
        await provider.fetch(START, END)
    assert engactivity.call_count == 4
    assert health.api_requests[("engactivity", "error")] == 4
    engactivity.side_effect = None
    engactivity.return_value = engactivity_reply()
    await provider.fetch(START, END)
    assert lookups["data"].call_count == 2  # maybe the account moved: asked again after no response at all
    await provider.aclose()


@pytest.mark.asyncio
async def test_malformed_json_fails_the_poll(mock: respx.MockRouter, lookups: dict[str, respx.Route]) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.get(ENGACTIVITY).mock(return_value=httpx.Response(200, text='{"metricsByIntervals": ['))
    provider, _, _, _ = make()
    with pytest.raises(
        ProviderError,
        match=r"^data request to va\.data\.liveperson\.net GET /operations/api/account/12345678/engactivity: "
        r"engactivity: response is not JSON \(HTTP 200",
    ):
        await provider.fetch(START, END)
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_missing_field_fails_the_poll_naming_it(
    mock: respx.MockRouter, lookups: dict[str, respx.Route]
) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    body = fixture("liveperson_intervals_skills.json")
    del body["metricsByIntervals"][1]["metricsData"]["skillsMetricsPerAgent"]["metricsPerSkill"]["12"][
        "metricsPerAgent"
    ]["8"]["totalInteractiveChats"]
    mock.get(ENGACTIVITY).mock(return_value=httpx.Response(200, json=body))
    provider, _, _, _ = make()
    with pytest.raises(ProviderError) as info:
        await provider.fetch(START, END)
    assert str(info.value) == (
        "data request to va.data.liveperson.net GET /operations/api/account/12345678/engactivity: "
        "engactivity response: Object missing required field `totalInteractiveChats` - at "
        '`$.metricsByIntervals[1].metricsData.skillsMetricsPerAgent.metricsPerSkill["12"].metricsPerAgent["8"]`'
    )
    await provider.aclose()


@pytest.mark.asyncio
async def test_an_error_body_in_a_200_fails_with_the_vendor_message(
    mock: respx.MockRouter, lookups: dict[str, respx.Route]
) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.get(ENGACTIVITY).mock(return_value=httpx.Response(200, json={"error": {"message": "account suspended"}}))
    provider, _, _, _ = make()
    with pytest.raises(ProviderError, match=r"the vendor answered 200 with an error: account suspended$"):
        await provider.fetch(START, END)
    await provider.aclose()


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (
            httpx.Response(404, json={"message": "account not found"}),
            r"^domain lookup \(leDataReporting\): data request to api\.liveperson\.net "
            r"GET /api/account/12345678/service/leDataReporting/baseURI.json: "
            r"HTTP 404: account not found$",
        ),
        (
            httpx.Response(200, json={"service": "leDataReporting"}),
            r"not a domain reply: Object missing required field `baseURI`$",
        ),
        (httpx.Response(200, json={"baseURI": 7}), r"not a domain reply: Expected `str`, got `int` - at `\$.baseURI`$"),
        (httpx.Response(200, json={"baseURI": "https://evil.example/x"}), r"baseURI is not a host name$"),
        (
            httpx.Response(200, text="<html>"),
            r"^domain lookup \(leDataReporting\): data request to api\.liveperson\.net GET "
            r"/api/account/12345678/service/leDataReporting/baseURI\.json: response is not JSON",
        ),
    ],
)
@pytest.mark.asyncio
async def test_a_failed_domain_lookup_fails_the_poll_clearly(
    mock: respx.MockRouter, reply: httpx.Response, message: str
) -> None:
    mock.get(LOOKUP.format(service="leDataReporting")).mock(return_value=reply)
    provider, _, _, _ = make()
    with pytest.raises(ProviderError, match=message):
        await provider.fetch(START, END)
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_domain_lookup_outage_is_retried(mock: respx.MockRouter, lookups: dict[str, respx.Route]) -> None:
    lookups["data"].side_effect = [
        httpx.ConnectError("refused"),
        lookup_reply("leDataReporting", "va.data.liveperson.net"),
    ]
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.get(ENGACTIVITY).mock(return_value=engactivity_reply())
    provider, health, sleep, _ = make()
    assert len(await provider.fetch(START, END)) == 4
    assert health.api_requests[("domain", "error")] == 1 and len(sleep.waits) == 1
    await provider.aclose()


@pytest.mark.asyncio
async def test_bad_client_credentials_fail_without_revealing_the_secret(
    mock: respx.MockRouter, lookups: dict[str, respx.Route]
) -> None:
    mock.post(TOKEN).mock(
        return_value=httpx.Response(401, json={"error": "invalid_client", "error_description": f"bad secret {SECRET}"})
    )
    provider, _, _, _ = make()
    with pytest.raises(ProviderError) as info:
        await provider.fetch(START, END)
    assert str(info.value) == (
        "token request to va.sentinel.liveperson.net POST /sentinel/api/v2/account/12345678/app/token: HTTP 401: "
        "invalid_client: bad secret <redacted>"
    )
    assert SECRET not in str(info.value)
    assert "engactivity refused" not in str(info.value)  # sentinel refused the client, not engactivity a token
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_span_beyond_the_timeframe_limit_fails_without_a_request(
    mock: respx.MockRouter, lookups: dict[str, respx.Route]
) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    engactivity = mock.get(ENGACTIVITY).mock(return_value=engactivity_reply())
    provider, _, _, _ = make()
    with pytest.raises(ProviderError, match="beyond the 1440-minute timeframe"):
        await provider.fetch(END - 86400, END)
    assert engactivity.call_count == 0
    await provider.aclose()


@pytest.mark.asyncio
async def test_seed_002_first_example_served_as_documented_exports_aht_12_for_skill_2_agent_3(
    mock: respx.MockRouter,
) -> None:
    """The issue's done-when, through the whole exporter: a server speaking engactivity as documented holds
    seed 002's first example in the newest closed interval, and a busy interval still filling after it."""
    seed = fixture("liveperson_seed002_skill2.json")
    empty = {
        "skillsMetricsPerAgent": {
            "metricsPerSkill": {},
            "metricsTotals": seed["skillsMetricsPerAgent"]["metricsTotals"],
        }
    }
    busy = {"totalInteractiveChats": 50, "totalNonInteractiveChats": 0, "totalHandlingTime": 99999}
    filling = {
        "skillsMetricsPerAgent": {"metricsPerSkill": {"2": {"metricsPerAgent": {"3": busy}, "metricsTotals": busy}}}
    }

    def documented(request: httpx.Request) -> httpx.Response:
        now = NOW  # the vendor's clock agrees with ours
        timeframe = int(request.url.params["timeframe"])
        assert int(request.url.params["interval"]) == 5 and timeframe % 5 == 0 and timeframe <= 1440
        newest = (now // 300 + 1) * 300  # rounded up past now, still filling
        first = (now - timeframe * 60) // 300 * 300
        intervals = []
        for end in range(newest, first, -300):
            data = filling if end == newest else seed if end == newest - 300 else empty
            intervals.append({"timestamp": end * 1000, "metricsData": data})
        return httpx.Response(200, json={"metricsByIntervals": intervals, **seed})

    mock.get(ENGACTIVITY).mock(side_effect=documented)
    source = {
        "name": "lp",
        "provider": "liveperson",
        "account_id": ACCOUNT,
        "domain": "va.data.liveperson.net",
        **{k: v for k, v in OAUTH1.items() if v is not None},
        "group_by": ["queue", "agent"],
        "windows": ["5m", "1h"],
    }
    exporter = Exporter(build_config({"sources": [source]}, "<test>", {}), clock=FakeClock(NOW), sleep=RecordingSleep())
    assert await exporter.poll_all()
    series = parse_exposition((await exporter.rendered_now()).text.decode())
    labels = (("agent", "3"), ("media_type", "chat"), ("provider", "liveperson"), ("queue", "2"), ("source", "lp"))
    for window in ("5m", "1h"):
        key = tuple(sorted((*labels, ("window", window))))
        assert series[("aht_seconds", key)] == 12.0
        assert series[("aht_contacts_handled", key)] == 1.0
        assert series[("aht_handle_time_seconds", key)] == 12.0
    assert 99999.0 not in series.values()
    await exporter.aclose()


@pytest.mark.asyncio
async def test_an_unreachable_sentinel_host_is_reported_as_the_token_step_with_its_host(
    mock: respx.MockRouter, lookups: dict[str, respx.Route]
) -> None:
    token = mock.post(TOKEN).mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
    engactivity = mock.get(ENGACTIVITY).mock(return_value=engactivity_reply())
    provider, health, sleep, _ = make()
    with pytest.raises(ProviderError) as info:
        await provider.fetch(START, END)
    await provider.aclose()
    assert str(info.value) == (
        "token request to va.sentinel.liveperson.net POST /sentinel/api/v2/account/12345678/app/token: "
        "ConnectError: [Errno 111] Connection refused"
    )
    assert token.call_count == 4 and engactivity.call_count == 0 and len(sleep.waits) == 3
    assert health.api_requests == {("domain", "200"): 2, ("token", "error"): 4}


@pytest.mark.asyncio
async def test_an_unreachable_domain_api_for_sentinel_is_reported_as_the_token_step(mock: respx.MockRouter) -> None:
    """The sentinel lookup serves the token: its failure says so, and names the Domain API's host."""
    mock.get(LOOKUP.format(service="leDataReporting")).mock(
        return_value=lookup_reply("leDataReporting", "va.data.liveperson.net")
    )
    mock.get(LOOKUP.format(service="sentinel")).mock(side_effect=httpx.ConnectError("Name or service not known"))
    provider, health, _, _ = make()
    with pytest.raises(ProviderError) as info:
        await provider.fetch(START, END)
    await provider.aclose()
    assert str(info.value) == (
        "domain lookup (sentinel): token request to api.liveperson.net "
        "GET /api/account/12345678/service/sentinel/baseURI.json: ConnectError: Name or service not known"
    )
    assert health.api_requests == {("domain", "200"): 1, ("domain", "error"): 4}
