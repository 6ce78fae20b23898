"""The Genesys provider over mocked HTTP: exact requests, and every failure path a user can hit."""

import base64
import json
from typing import Any

import httpx
import pytest
import respx

from aht_exporter.health import SourceHealth
from aht_exporter.model import Field, ProviderError, RateLimited
from aht_exporter.oauth import ClientCredentialsAuth
from aht_exporter.providers.genesys import GenesysProvider
from aht_exporter.timebuckets import parse_iso
from tests.helpers import RecordingSleep, fixture
from tests.unit.genesys_config import API, LOGIN, SECRET, genesys_config

NINE = int(parse_iso("2026-03-02T09:00:00Z"))
TEN = NINE + 3600
QUERY = f"{API}/api/v2/analytics/conversations/aggregates/query"
TOKEN = f"{LOGIN}/oauth/token"


def token_reply(token: str = "tok-1", expires_in: int = 86400) -> httpx.Response:
    return httpx.Response(200, json={"access_token": token, "token_type": "bearer", "expires_in": expires_in})


def genesys_error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={"message": message, "code": code, "status": status, "contextId": "ctx-42", "details": [], "errors": []},
    )


def make(**overrides: Any) -> tuple[GenesysProvider, SourceHealth, RecordingSleep]:
    health = SourceHealth("genesys-eu", "genesys", 3)
    sleep = RecordingSleep()
    return GenesysProvider(genesys_config(**overrides), health, sleep=sleep), health, sleep


@pytest.fixture
def mock() -> Any:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as m:
        yield m


@pytest.mark.asyncio
async def test_fetch_sends_the_token_request_and_the_query_exactly(mock: respx.MockRouter) -> None:
    token = mock.post(TOKEN).mock(return_value=token_reply())
    query = mock.post(QUERY).mock(return_value=httpx.Response(200, json=fixture("genesys_aggregates_queue_media.json")))
    provider, health, _ = make()

    buckets = await provider.fetch(NINE, TEN)

    treq = token.calls[0].request
    expected_basic = base64.b64encode(f"client-123:{SECRET}".encode()).decode()
    assert treq.headers["Authorization"] == f"Basic {expected_basic}"
    assert treq.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert treq.content == b"grant_type=client_credentials"
    qreq = query.calls[0].request
    assert qreq.url == QUERY
    assert qreq.headers["Authorization"] == "Bearer tok-1"
    assert qreq.headers["Content-Type"] == "application/json"
    assert qreq.headers["User-Agent"].startswith("aht-exporter/")
    assert json.loads(qreq.content) == {
        "interval": "2026-03-02T09:00:00.000Z/2026-03-02T10:00:00.000Z",
        "granularity": "PT30M",
        "groupBy": ["mediaType", "queueId"],
        "metrics": ["tHandle", "tTalkComplete", "tHeldComplete", "tAcw", "tAnswered", "tAbandon", "nOffered"],
    }
    assert len(buckets) == 4
    assert buckets[0].values[Field.HANDLE_TIME] == pytest.approx(4519.876)
    assert health.api_requests == {("token", "200"): 1, ("aggregates", "200"): 1}
    await provider.aclose()


@pytest.mark.asyncio
async def test_the_token_is_cached_between_queries(mock: respx.MockRouter) -> None:
    token = mock.post(TOKEN).mock(return_value=token_reply())
    mock.post(QUERY).mock(return_value=httpx.Response(200, json={}))
    provider, _, _ = make()
    await provider.fetch(NINE, TEN)
    await provider.fetch(NINE, TEN)
    assert token.call_count == 1
    await provider.aclose()


@pytest.mark.asyncio
async def test_the_token_is_refreshed_before_it_expires(mock: respx.MockRouter) -> None:
    token = mock.post(TOKEN).mock(side_effect=[token_reply("tok-1", 3600), token_reply("tok-2", 3600)])
    query = mock.post(QUERY).mock(return_value=httpx.Response(200, json={}))
    provider, _, _ = make()
    now = [1000.0]
    auth = provider.client.http.auth
    assert isinstance(auth, ClientCredentialsAuth)
    auth._monotonic = lambda: now[0]
    await provider.fetch(NINE, TEN)
    now[0] += 3600 - 301  # the margin is a tenth of the lifetime, at most 300 s: still good
    await provider.fetch(NINE, TEN)
    now[0] += 2  # inside the refresh margin
    await provider.fetch(NINE, TEN)
    assert token.call_count == 2
    assert [c.request.headers["Authorization"] for c in query.calls] == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_401_refreshes_the_token_once_and_replays(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(side_effect=[token_reply("old"), token_reply("new")])
    query = mock.post(QUERY).mock(
        side_effect=[
            genesys_error(401, "authentication.required", "No authentication bearer token specified"),
            httpx.Response(200, json={}),
        ]
    )
    provider, health, _ = make()
    assert await provider.fetch(NINE, TEN) == []
    assert [c.request.headers["Authorization"] for c in query.calls] == ["Bearer old", "Bearer new"]
    assert health.api_requests == {("token", "200"): 2, ("aggregates", "401"): 1, ("aggregates", "200"): 1}
    assert health.tokens_issued == 2  # aht_exporter_tokens_issued_total counts both
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_second_401_fails_the_poll_with_the_vendor_message(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.post(QUERY).mock(return_value=genesys_error(401, "authentication.required", "Invalid token"))
    provider, _, _ = make()
    with pytest.raises(ProviderError) as info:
        await provider.fetch(NINE, TEN)
    assert str(info.value) == (
        "data request to api.mypurecloud.ie POST /api/v2/analytics/conversations/aggregates/query: "
        "HTTP 401: authentication.required: Invalid token (ctx-42)"
    )
    assert info.value.status == 401
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_400_surfaces_code_message_and_context_id(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    query = mock.post(QUERY).mock(return_value=genesys_error(400, "bad.request", "Invalid metric: tHold"))
    provider, _, sleep = make()
    with pytest.raises(ProviderError, match=r"HTTP 400: bad.request: Invalid metric: tHold \(ctx-42\)$"):
        await provider.fetch(NINE, TEN)
    assert query.call_count == 1  # a 400 is not retried
    assert sleep.waits == []
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_429_waits_for_retry_after_then_succeeds(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    limited = genesys_error(429, "too.many.requests", "Rate limit exceeded the maximum")
    limited.headers["Retry-After"] = "7"
    mock.post(QUERY).mock(side_effect=[limited, httpx.Response(200, json={})])
    provider, health, sleep = make()
    assert await provider.fetch(NINE, TEN) == []
    assert sleep.waits == [7.0]
    assert health.rate_limited == 1
    assert health.api_requests == {("token", "200"): 1, ("aggregates", "429"): 1, ("aggregates", "200"): 1}
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_429_that_persists_fails_as_rate_limited(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    query = mock.post(QUERY).mock(return_value=genesys_error(429, "too.many.requests", "slow down"))
    provider, health, sleep = make()
    with pytest.raises(RateLimited, match=r"rate limited: too\.many\.requests: slow down"):
        await provider.fetch(NINE, TEN)
    assert query.call_count == 4  # bounded: four attempts
    assert len(sleep.waits) == 3
    assert all(0 < w <= 30 for w in sleep.waits)
    assert health.rate_limited == 4
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_retry_after_longer_than_a_poll_can_wait_gives_up_at_once(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    limited = genesys_error(429, "too.many.requests", "slow down")
    limited.headers["Retry-After"] = "3600"
    query = mock.post(QUERY).mock(return_value=limited)
    provider, _, sleep = make()
    with pytest.raises(RateLimited):
        await provider.fetch(NINE, TEN)
    assert query.call_count == 1
    assert sleep.waits == []
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_500_is_retried_with_backoff(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.post(QUERY).mock(
        side_effect=[httpx.Response(500, text="upstream exploded"), httpx.Response(503), httpx.Response(200, json={})]
    )
    provider, health, sleep = make()
    assert await provider.fetch(NINE, TEN) == []
    assert len(sleep.waits) == 2
    assert 1.0 <= sleep.waits[0] <= 2.0  # initial 1 s plus up to 1 s of jitter
    assert health.api_requests == {
        ("token", "200"): 1,
        ("aggregates", "500"): 1,
        ("aggregates", "503"): 1,
        ("aggregates", "200"): 1,
    }
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_timeout_is_retried_then_fails_the_poll(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.post(QUERY).mock(side_effect=httpx.ReadTimeout("read timed out"))
    provider, health, sleep = make()
    with pytest.raises(
        ProviderError,
        match=r"^data request to api\.mypurecloud\.ie POST /api/v2/analytics/conversations/aggregates/query: "
        r"timed out$",
    ):
        await provider.fetch(NINE, TEN)
    assert health.api_requests == {("token", "200"): 1, ("aggregates", "error"): 4}
    assert len(sleep.waits) == 3
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_connection_error_is_retried(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.post(QUERY).mock(side_effect=[httpx.ConnectError("connection refused"), httpx.Response(200, json={})])
    provider, health, _ = make()
    assert await provider.fetch(NINE, TEN) == []
    assert health.api_requests == {("token", "200"): 1, ("aggregates", "error"): 1, ("aggregates", "200"): 1}
    await provider.aclose()


@pytest.mark.asyncio
async def test_malformed_json_fails_the_poll(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.post(QUERY).mock(
        return_value=httpx.Response(200, text='{"results": [', headers={"Content-Type": "application/json"})
    )
    provider, _, _ = make()
    with pytest.raises(ProviderError, match=r"aggregates query: response is not JSON \(HTTP 200"):
        await provider.fetch(NINE, TEN)
    await provider.aclose()


@pytest.mark.asyncio
async def test_missing_fields_fail_the_poll_naming_the_field(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    body = {
        "results": [
            {
                "group": {"mediaType": "voice"},
                "data": [
                    {
                        "interval": "2026-03-02T09:00:00Z/2026-03-02T09:30:00Z",
                        "metrics": [{"metric": "tHandle", "stats": {"sum": 5}}],
                    }
                ],
            }
        ]
    }
    mock.post(QUERY).mock(return_value=httpx.Response(200, json=body))
    provider, _, _ = make()
    with pytest.raises(ProviderError, match=r"results\[0\].data\[0\].metrics\[0\].stats.count is missing"):
        await provider.fetch(NINE, TEN)
    await provider.aclose()


@pytest.mark.asyncio
async def test_long_spans_are_chunked_by_max_query_span(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    query = mock.post(QUERY).mock(return_value=httpx.Response(200, json={}))
    provider, _, _ = make(max_query_span="12h")
    await provider.fetch(TEN - 86400, TEN)
    intervals = [json.loads(c.request.content)["interval"] for c in query.calls]
    assert intervals == [
        "2026-03-01T10:00:00.000Z/2026-03-01T22:00:00.000Z",
        "2026-03-01T22:00:00.000Z/2026-03-02T10:00:00.000Z",
    ]
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_query_too_large_is_halved_and_the_smaller_span_remembered(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())

    def answer(request: httpx.Request) -> httpx.Response:
        start, end = (parse_iso(t) for t in json.loads(request.content)["interval"].split("/"))
        if end - start > 4 * 3600:
            return genesys_error(400, "bad.request", "Query interval is too large: the maximum is 4 hours")
        return httpx.Response(200, json={})

    query = mock.post(QUERY).mock(side_effect=answer)
    provider, _, _ = make()
    await provider.fetch(TEN - 8 * 3600, TEN)
    spans = [json.loads(c.request.content)["interval"] for c in query.calls]
    assert spans == [
        "2026-03-02T02:00:00.000Z/2026-03-02T10:00:00.000Z",
        "2026-03-02T02:00:00.000Z/2026-03-02T06:00:00.000Z",
        "2026-03-02T06:00:00.000Z/2026-03-02T10:00:00.000Z",
    ]
    assert provider.query_span == 4 * 3600
    before = query.call_count
    await provider.fetch(TEN - 8 * 3600, TEN)
    assert query.call_count - before == 2  # straight to 4-hour queries: no more failed attempts
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_query_too_large_at_one_bucket_gives_up(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    query = mock.post(QUERY).mock(return_value=genesys_error(400, "bad.request", "Result set too large"))
    provider, _, _ = make()
    with pytest.raises(ProviderError, match="Result set too large"):
        await provider.fetch(TEN - 3600, TEN)
    assert query.call_count == 2  # the hour, then its first half: one bucket cannot be split further
    await provider.aclose()


@pytest.mark.asyncio
async def test_bad_client_credentials_fail_without_revealing_the_secret(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(
        return_value=httpx.Response(400, json={"error": "invalid_client", "description": f"bad secret {SECRET}"})
    )
    provider, _, _ = make()
    with pytest.raises(ProviderError) as info:
        await provider.fetch(NINE, TEN)
    assert str(info.value) == (
        "token request to login.mypurecloud.ie POST /oauth/token: HTTP 400: invalid_client: bad secret <redacted>"
    )
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_token_endpoint_outage_is_retried(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(side_effect=[httpx.Response(503), token_reply()])
    mock.post(QUERY).mock(return_value=httpx.Response(200, json={}))
    provider, health, sleep = make()
    assert await provider.fetch(NINE, TEN) == []
    assert health.api_requests == {("token", "503"): 1, ("token", "200"): 1, ("aggregates", "200"): 1}
    assert len(sleep.waits) == 1
    await provider.aclose()


@pytest.mark.asyncio
async def test_names_page_through_queues_and_users(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    queues = mock.get(f"{API}/api/v2/routing/queues").mock(
        side_effect=[
            httpx.Response(200, json={"entities": [{"id": "q1", "name": "Sales"}], "pageNumber": 1, "pageCount": 2}),
            httpx.Response(200, json={"entities": [{"id": "q2", "name": "Support"}], "pageNumber": 2, "pageCount": 2}),
        ]
    )
    users = mock.get(f"{API}/api/v2/users").mock(
        return_value=httpx.Response(200, json={"entities": [{"id": "u1", "name": "Ada"}], "pageCount": 1})
    )
    provider, _, _ = make(group_by=["queue", "agent"])
    names = await provider.names()
    assert names.queues == {"q1": "Sales", "q2": "Support"}
    assert names.agents == {"u1": "Ada"}
    assert [dict(c.request.url.params) for c in queues.calls] == [
        {"pageSize": "100", "pageNumber": "1"},
        {"pageSize": "100", "pageNumber": "2"},
    ]
    assert users.calls[0].request.headers["Authorization"] == "Bearer tok-1"
    await provider.aclose()


@pytest.mark.asyncio
async def test_names_are_only_looked_up_for_grouped_labels(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    provider, _, _ = make(group_by=["media_type"])
    names = await provider.names()
    assert (names.queues, names.agents) == ({}, {})
    await provider.aclose()


@pytest.mark.asyncio
async def test_an_unreachable_login_host_is_reported_as_the_token_step_with_its_host(mock: respx.MockRouter) -> None:
    """Issue 15: a login host that does not answer was reported against the aggregates query."""
    token = mock.post(TOKEN).mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
    query = mock.post(QUERY).mock(return_value=httpx.Response(200, json={}))
    provider, health, sleep = make()
    with pytest.raises(ProviderError) as info:
        await provider.fetch(NINE, TEN)
    await provider.aclose()
    assert str(info.value) == (
        "token request to login.mypurecloud.ie POST /oauth/token: ConnectError: [Errno 111] Connection refused"
    )
    assert token.call_count == 4 and query.call_count == 0 and len(sleep.waits) == 3
    assert health.api_requests == {("token", "error"): 4}


@pytest.mark.asyncio
async def test_a_failed_name_lookup_is_reported_as_the_names_step_with_its_host(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    queues = mock.get(url__startswith=f"{API}/api/v2/routing/queues").mock(
        return_value=genesys_error(403, "missing.permissions", "Missing routing:queue:view")
    )
    provider, health, _ = make()
    with pytest.raises(ProviderError) as info:
        await provider.names()
    await provider.aclose()
    assert str(info.value) == (
        "names request to api.mypurecloud.ie GET /api/v2/routing/queues: "
        "HTTP 403: missing.permissions: Missing routing:queue:view (ctx-42)"
    )
    assert str(queues.calls[0].request.url) == f"{API}/api/v2/routing/queues?pageSize=100&pageNumber=1"
    assert health.api_requests == {("token", "200"): 1, ("queues", "403"): 1}
