"""Issue 15: each request counted under a fixed endpoint name, and the request budget a vendor reports.

Genesys reports the token's budget in `inin-ratelimit-*` headers on its replies (docs/providers/genesys.md,
Rate-limit headers); any vendor's 429 says none is left, and its `Retry-After` when more will be. A reply
that reports nothing forgets the endpoint's reading, so that no gauge outlives what the vendor last said.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx

from aht_exporter.clock import FakeClock
from aht_exporter.exposition import SourceView, render
from aht_exporter.health import Quota, SourceHealth
from aht_exporter.httpclient import ApiClient, reported_quota, retry_after_seconds
from aht_exporter.model import RateLimited
from aht_exporter.providers.genesys import GenesysProvider, quota
from aht_exporter.providers.koreai import KoreAIProvider
from aht_exporter.providers.ozonetel import OzonetelProvider
from aht_exporter.timebuckets import parse_iso
from tests.helpers import T0, RecordingSleep, parse_exposition, samples
from tests.unit.genesys_config import API, LOGIN, genesys_config
from tests.unit.test_koreai_config import CALLVOLUME, koreai_config
from tests.unit.test_ozonetel_http import AHT, oz_config
from tests.unit.test_ozonetel_http import TOKEN as OZ_TOKEN

NINE = int(parse_iso("2026-03-02T09:00:00Z"))
TEN = NINE + 3600
NOW = float(TEN + 60)
QUERY = f"{API}/api/v2/analytics/conversations/aggregates/query"
TOKEN = f"{LOGIN}/oauth/token"


def inin(count: int, allowed: int = 300, reset: int = 42) -> dict[str, str]:
    """The three headers as the Genesys SDK's trace log shows them on a reply (all strings)."""
    return {
        "inin-ratelimit-count": str(count),
        "inin-ratelimit-allowed": str(allowed),
        "inin-ratelimit-reset": str(reset),
    }


def token_reply(headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"access_token": "tok-1", "token_type": "bearer", "expires_in": 86400}
    return httpx.Response(200, json=body, headers=headers)


@pytest.fixture
def mock() -> Any:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as m:
        yield m


class RecordingHealth(SourceHealth):
    """Keeps every reading the client records, in order, besides the latest."""

    def __init__(self, source: str, provider: str) -> None:
        super().__init__(source, provider, 3)
        self.seen: list[dict[str, Quota]] = []

    def record_quota(self, endpoint: str, quota: Quota | None) -> None:
        super().record_quota(endpoint, quota)
        self.seen.append(dict(self.quotas))


def genesys(**overrides: Any) -> tuple[GenesysProvider, RecordingHealth, RecordingSleep]:
    health = RecordingHealth("genesys-eu", "genesys")
    sleep = RecordingSleep()
    provider = GenesysProvider(genesys_config(**overrides), health, clock=FakeClock(NOW), sleep=sleep)
    return provider, health, sleep


# --- Genesys' headers ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_genesys_replies_give_each_endpoint_its_limit_what_is_left_and_when_it_resets(
    mock: respx.MockRouter,
) -> None:
    token = mock.post(TOKEN).mock(return_value=token_reply())  # the login host sends no budget here
    query = mock.post(QUERY).mock(return_value=httpx.Response(200, json={}, headers=inin(271, reset=42)))
    queues = mock.get(url__startswith=f"{API}/api/v2/routing/queues").mock(
        return_value=httpx.Response(
            200, json={"entities": [{"id": "q1", "name": "Sales"}], "pageCount": 1}, headers=inin(272, reset=41)
        )
    )
    provider, health, _ = genesys()
    assert await provider.fetch(NINE, TEN) == []
    names = await provider.names()
    await provider.aclose()

    assert names.queues == {"q1": "Sales"}
    assert token.calls[0].request.url == TOKEN and query.calls[0].request.method == "POST"
    assert str(queues.calls[0].request.url) == f"{API}/api/v2/routing/queues?pageSize=100&pageNumber=1"
    assert health.api_requests == {("token", "200"): 1, ("aggregates", "200"): 1, ("queues", "200"): 1}
    assert health.quotas == {
        "aggregates": Quota(limit=300.0, remaining=29.0, reset_at=NOW + 42),
        "queues": Quota(limit=300.0, remaining=28.0, reset_at=NOW + 41),
    }
    series = parse_exposition(render([SourceView(health, None)]).text.decode())
    key = {"source": "genesys-eu", "provider": "genesys"}
    assert samples(series, "aht_exporter_api_quota_limit", **key) == {
        (("endpoint", "aggregates"), ("provider", "genesys"), ("source", "genesys-eu")): 300.0,
        (("endpoint", "queues"), ("provider", "genesys"), ("source", "genesys-eu")): 300.0,
    }
    assert samples(series, "aht_exporter_api_quota_remaining", endpoint="aggregates") == {
        (("endpoint", "aggregates"), ("provider", "genesys"), ("source", "genesys-eu")): 29.0
    }
    assert samples(series, "aht_exporter_api_quota_reset_timestamp_seconds", endpoint="queues") == {
        (("endpoint", "queues"), ("provider", "genesys"), ("source", "genesys-eu")): NOW + 41
    }
    assert samples(series, "aht_exporter_api_requests_total", endpoint="queues", status="200") == {
        (("endpoint", "queues"), ("provider", "genesys"), ("source", "genesys-eu"), ("status", "200")): 1.0
    }


@pytest.mark.asyncio
async def test_a_genesys_429_says_nothing_is_left_until_the_later_of_its_reset_and_retry_after(
    mock: respx.MockRouter,
) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    refusal = httpx.Response(
        429,
        json={"message": "Rate limit exceeded the maximum. Retry the request in [50] seconds", "code": "too.many"},
        headers={**inin(300, reset=30), "Retry-After": "50"},
    )
    mock.post(QUERY).mock(side_effect=[refusal, httpx.Response(200, json={}, headers=inin(1, reset=60))])
    provider, health, sleep = genesys()
    assert await provider.fetch(NINE, TEN) == []
    await provider.aclose()
    assert sleep.waits == [50.0]  # the Retry-After, waited out
    assert health.seen[1:] == [  # after the token's reply, which reported nothing
        {"aggregates": Quota(limit=300.0, remaining=0.0, reset_at=NOW + 50)},
        {"aggregates": Quota(limit=300.0, remaining=299.0, reset_at=NOW + 60)},
    ]
    assert health.rate_limited == 1
    assert health.api_requests == {("token", "200"): 1, ("aggregates", "429"): 1, ("aggregates", "200"): 1}


def test_a_429_reading_takes_the_later_of_the_window_reset_and_retry_after() -> None:
    request = httpx.Request("POST", QUERY)
    late_retry = httpx.Response(429, headers={**inin(300, reset=30), "Retry-After": "50"}, request=request)
    late_reset = httpx.Response(429, headers={**inin(300, reset=70), "Retry-After": "50"}, request=request)
    assert reported_quota(late_retry, NOW, quota) == Quota(limit=300.0, remaining=0.0, reset_at=NOW + 50)
    assert reported_quota(late_reset, NOW, quota) == Quota(limit=300.0, remaining=0.0, reset_at=NOW + 70)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"inin-ratelimit-allowed": "300"},  # no count: what is left is unknown
        {"inin-ratelimit-allowed": "many", "inin-ratelimit-count": "1"},
        {"inin-ratelimit-allowed": "nan", "inin-ratelimit-count": "1"},
        {"inin-ratelimit-allowed": "inf", "inin-ratelimit-count": "1"},
        {"inin-ratelimit-allowed": "-300", "inin-ratelimit-count": "1"},
        {"inin-ratelimit-allowed": "9" * 400, "inin-ratelimit-count": "1"},
    ],
)
def test_genesys_headers_that_are_missing_or_not_numbers_report_no_budget(headers: dict[str, str]) -> None:
    assert quota(httpx.Response(200, headers=headers), NOW) is None


def test_a_count_past_the_limit_leaves_nothing_and_an_unreadable_reset_leaves_the_reset_unknown() -> None:
    reply = httpx.Response(200, headers={**inin(305), "inin-ratelimit-reset": "soon"})
    assert quota(reply, NOW) == Quota(limit=300.0, remaining=0.0, reset_at=None)


@pytest.mark.asyncio
async def test_a_reply_without_budget_headers_forgets_the_endpoint_s_reading(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.post(QUERY).mock(
        side_effect=[httpx.Response(200, json={}, headers=inin(3)), httpx.Response(200, json={})]  # a proxy's reply
    )
    provider, health, _ = genesys()
    await provider.fetch(NINE, TEN)
    assert health.quotas == {"aggregates": Quota(limit=300.0, remaining=297.0, reset_at=NOW + 42)}
    await provider.fetch(NINE, TEN)
    await provider.aclose()
    assert health.quotas == {}
    text = render([SourceView(health, None)]).text.decode()
    assert "aht_exporter_api_quota_remaining{" not in text


# --- vendors that report no budget ----------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_koreai_slow_down_says_nothing_is_left_until_retry_after_then_a_success_clears_it(
    mock: respx.MockRouter,
) -> None:
    page = {"hasMore": False, "CallVolumeUpdate": [], "totalCount": 0}
    text = {"errors": [{"msg": "You've exceeded the per-minute rate limit. Please wait for sometime before retrying."}]}
    route = mock.post(CALLVOLUME).mock(
        side_effect=[httpx.Response(429, json=text, headers={"Retry-After": "7"}), httpx.Response(200, json=page)]
    )
    health = RecordingHealth("kore-us", "koreai")
    sleep = RecordingSleep()
    clock = FakeClock(NOW)
    provider = KoreAIProvider(koreai_config(), health, clock=clock, sleep=sleep)
    assert await provider.fetch(TEN - 900, TEN) == []
    await provider.aclose()
    assert route.call_count == 2 and sleep.waits == [7.0]
    assert health.seen == [{"callvolume": Quota(remaining=0.0, reset_at=NOW + 7)}, {}]
    assert health.api_requests == {("callvolume", "429"): 1, ("callvolume", "200"): 1}


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_an_ozonetel_max_limit_exceeded_in_a_200_says_the_aht_budget_is_spent(mock: respx.MockRouter) -> None:
    mock.post(OZ_TOKEN).mock(return_value=httpx.Response(200, json={"token": "tok-1", "message": ""}))
    aht = mock.post(AHT).mock(
        return_value=httpx.Response(200, json={"status": "error", "message": "max limit exceeded"})
    )
    health = SourceHealth("oz", "ozonetel", 3)
    provider = OzonetelProvider(oz_config(agents=["a1"]), health, clock=FakeClock(T0), sleep=RecordingSleep())
    with pytest.raises(RateLimited):
        await provider.fetch_averages()
    await provider.aclose()
    assert aht.call_count == 1
    assert health.quotas == {"aht": Quota(remaining=0.0)}
    assert health.api_requests == {("token", "200"): 1, ("aht", "200"): 1}
    assert health.rate_limited == 1


# --- the client itself ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_request_without_an_endpoint_name_is_refused_before_anything_is_sent() -> None:
    client = ApiClient(counter=SourceHealth("s", "genesys", 3), timeout=1)
    with pytest.raises(TypeError, match="endpoint"):
        await client.request("GET", "https://api.example.com/x")  # type: ignore[call-arg]  # the point of the test
    await client.aclose()


@pytest.mark.asyncio
async def test_a_reader_that_raises_reports_no_budget_and_the_reply_still_counts(mock: respx.MockRouter) -> None:
    mock.get("https://api.example.com/x").mock(return_value=httpx.Response(200, json={}))

    def broken(response: httpx.Response, now: float) -> Quota | None:
        raise ValueError("unreadable")

    health = SourceHealth("s", "genesys", 3)
    client = ApiClient(counter=health, timeout=1, quota_reader=broken)
    response = await client.request("GET", "https://api.example.com/x", endpoint="x")
    await client.aclose()
    assert response.status_code == 200
    assert health.api_requests == {("x", "200"): 1} and health.quotas == {}


def test_retry_after_as_an_http_date_is_counted_from_the_given_now() -> None:
    when = datetime.fromtimestamp(NOW + 90, tz=UTC)
    reply = httpx.Response(429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    assert retry_after_seconds(reply, NOW) == 90.0
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "Fri, 99 Foo 1e99"}), NOW) is None
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "inf"}), NOW) is None
