"""The Kore.ai provider over mocked HTTP: exact requests, signed JWTs, paging, pacing and every failure path.

Every test runs on looptime's fake loop clock: the account's rate limiter paces requests a second apart,
and that time passes instantly here. Retry waits go to a RecordingSleep, so nothing waits for real.
"""

import asyncio
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
import respx

from aht_exporter.clock import FakeClock
from aht_exporter.health import SourceHealth
from aht_exporter.model import Field, ProviderError, RateLimited, make_labels
from aht_exporter.pacing import Accounts
from aht_exporter.providers.koreai import MAX_PAGES, PACING_SLACK, KoreAIProvider
from aht_exporter.timebuckets import parse_iso
from tests.helpers import RecordingSleep, fixture
from tests.unit.test_koreai_config import ACCOUNT, CALLVOLUME, CLIENT, ORG, SECRET, koreai_config

# What every error about a callvolume request or its reply starts with: the step, the host, the request.
HERE = re.escape(f"data request to platform.kore.ai POST {httpx.URL(CALLVOLUME).path}")

pytestmark = [pytest.mark.asyncio, pytest.mark.looptime]

NOW = parse_iso("2023-06-01T10:07:00Z")
NINE45 = int(parse_iso("2023-06-01T09:45:00Z"))
TEN = NINE45 + 900
SEED_QUEUE = "qu-6c47543-19ca-49ac-a085-2292bba5xxxx"
RATE_TEXT = "You've exceeded the per-minute rate limit. Please wait for sometime before retrying."


def seed_record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = dict(fixture("koreai_seed003_response.json")["CallVolumeUpdate"][0])
    record.update(changes)
    return record


def records_for_queues(n: int) -> list[dict[str, Any]]:
    return [seed_record(_id=f"r{i:04d}", queueId=f"qu-{i:04d}", queueName=f"Queue {i}") for i in range(n)]


def make(accounts: Accounts | None = None, **overrides: Any) -> tuple[KoreAIProvider, SourceHealth, RecordingSleep]:
    health = SourceHealth("kore-us", "koreai", 3)
    sleep = RecordingSleep()
    provider = KoreAIProvider(
        koreai_config(**overrides), health, clock=FakeClock(NOW), sleep=sleep, accounts=accounts or Accounts()
    )
    return provider, health, sleep


def kore_error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"errors": [{"msg": message, "code": status}]})


class PagingServer:
    """Serves `records` by `skip`/`limit` as Kore documents, and notes when (loop time) each request came."""

    def __init__(self, records: list[dict[str, Any]], *, faults: Callable[[int], httpx.Response | None] | None = None):
        self.records = records
        self.faults = faults
        self.times: list[float] = []
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.times.append(asyncio.get_running_loop().time())
        fault = self.faults(len(self.times)) if self.faults else None
        if fault is not None:
            return fault
        body = json.loads(request.content)
        self.bodies.append(body)
        skip, limit = body["skip"], body["limit"]
        chunk = self.records[skip : skip + limit]
        more = skip + len(chunk) < len(self.records)
        return httpx.Response(200, json={"hasMore": more, "CallVolumeUpdate": chunk, "totalCount": len(self.records)})


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as m:
        yield m


def most_in_any_minute(times: list[float]) -> int:
    """The most requests that fall in any closed 60-second span."""
    return max(sum(1 for t in times if start <= t <= start + 60) for start in times)


# --- requests --------------------------------------------------------------------------------------------------


async def test_fetch_sends_the_documented_request_with_a_signed_jwt_in_the_auth_header(mock: respx.MockRouter) -> None:
    route = mock.post(CALLVOLUME).mock(return_value=httpx.Response(200, json=fixture("koreai_seed003_response.json")))
    provider, health, _ = make()

    buckets = await provider.fetch(NINE45, TEN)

    request = route.calls[0].request
    assert request.url == CALLVOLUME
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("aht-exporter/")
    assert "Authorization" not in request.headers
    assert json.loads(request.content) == {
        "orgId": ORG,
        "fromTimeStamp": "2023-06-01T09:45:00Z",
        "toTimeStamp": "2023-06-01T10:00:00Z",
        "skip": 0,
        "limit": 100,
    }
    token = request.headers["auth"]
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims["appId"] == CLIENT and claims["sub"] == CLIENT
    assert claims["iat"] == int(NOW) and claims["exp"] == int(NOW) + 300  # from the injected clock
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "some-other-secret-0123456789abcdef", algorithms=["HS256"])
    assert SECRET not in str(request.headers) and SECRET not in request.content.decode()

    [bucket] = buckets
    assert bucket.labels == make_labels(media_type="chat", queue=SEED_QUEUE)
    assert bucket.values[Field.HANDLE_TIME] / bucket.values[Field.CONTACTS_HANDLED] == 68.043
    assert (bucket.values[Field.TALK_TIME], bucket.values[Field.ACW_TIME]) == (64.094, 3.949)
    assert health.api_requests == {("callvolume", "200"): 1}
    await provider.aclose()


async def test_the_configured_timeout_applies_to_every_request() -> None:
    provider, _, _ = make(timeout="1500ms")
    assert provider.client.http.timeout == httpx.Timeout(1.5)
    await provider.aclose()


async def test_every_request_carries_a_jwt_of_its_own(mock: respx.MockRouter) -> None:
    server = PagingServer(records_for_queues(3))
    route = mock.post(CALLVOLUME).mock(side_effect=server)
    provider, _, _ = make(page_size=1)
    await provider.fetch(NINE45, TEN)
    await provider.fetch(NINE45, TEN)
    jtis = [
        jwt.decode(c.request.headers["auth"], SECRET, algorithms=["HS256"], options={"verify_exp": False})["jti"]
        for c in route.calls
    ]
    assert len(jtis) == 6 and len(set(jtis)) == 6
    await provider.aclose()


@pytest.mark.parametrize("page_size", [1, 2, 7, 100])
async def test_pages_are_fetched_by_skip_until_has_more_is_false(mock: respx.MockRouter, page_size: int) -> None:
    records = [*records_for_queues(6), seed_record()]
    server = PagingServer(records)
    mock.post(CALLVOLUME).mock(side_effect=server)
    provider, _, _ = make(page_size=page_size)

    buckets = await provider.fetch(NINE45, TEN)

    pages = -(-len(records) // page_size)
    assert [b["skip"] for b in server.bodies] == [i * page_size for i in range(pages)]
    assert {b["limit"] for b in server.bodies} == {page_size}
    assert len(buckets) == 7
    seed = next(b for b in buckets if dict(b.labels)["queue"] == SEED_QUEUE)
    assert seed.values[Field.HANDLE_TIME] == 68.043 and seed.values[Field.CONTACTS_HANDLED] == 1
    await provider.aclose()


async def test_skip_advances_by_what_arrived_when_a_page_is_short(mock: respx.MockRouter) -> None:
    records = records_for_queues(5)
    replies = [
        httpx.Response(200, json={"hasMore": True, "CallVolumeUpdate": records[:2], "totalCount": 5}),
        httpx.Response(200, json={"hasMore": False, "CallVolumeUpdate": records[2:], "totalCount": 5}),
    ]
    route = mock.post(CALLVOLUME).mock(side_effect=replies)
    provider, _, _ = make(page_size=4)
    assert len(await provider.fetch(NINE45, TEN)) == 5
    assert [json.loads(c.request.content)["skip"] for c in route.calls] == [0, 2]
    await provider.aclose()


async def test_names_are_the_latest_queue_names_seen_in_records(mock: respx.MockRouter) -> None:
    mock.post(CALLVOLUME).mock(
        side_effect=[
            httpx.Response(200, json={"hasMore": False, "CallVolumeUpdate": [seed_record()], "totalCount": 1}),
            httpx.Response(
                200, json={"hasMore": False, "CallVolumeUpdate": [seed_record(queueName="Renamed")], "totalCount": 1}
            ),
        ]
    )
    provider, _, _ = make()
    assert (await provider.names()).queues == {}
    await provider.fetch(NINE45, TEN)
    assert (await provider.names()).queues == {SEED_QUEUE: "custom day"}
    await provider.fetch(NINE45, TEN)
    assert (await provider.names()).queues == {SEED_QUEUE: "Renamed"}
    await provider.aclose()


async def test_names_are_not_exported_when_not_grouped_by_queue(mock: respx.MockRouter) -> None:
    mock.post(CALLVOLUME).mock(return_value=httpx.Response(200, json=fixture("koreai_seed003_response.json")))
    provider, _, _ = make(group_by=["media_type"])
    await provider.fetch(NINE45, TEN)
    assert (await provider.names()).queues == {}
    await provider.aclose()


# --- the page bound ---------------------------------------------------------------------------------------------


async def test_paging_stops_at_the_hard_bound_with_a_clear_error(mock: respx.MockRouter) -> None:
    endless = httpx.Response(200, json={"hasMore": True, "CallVolumeUpdate": [seed_record()]})  # no totalCount
    route = mock.post(CALLVOLUME).mock(return_value=endless)
    provider, _, _ = make(page_size=1)
    with pytest.raises(ProviderError, match=rf"more than {MAX_PAGES} records .* exceed the bound of {MAX_PAGES} pages"):
        await provider.fetch(NINE45, TEN)
    assert route.call_count == MAX_PAGES
    await provider.aclose()


async def test_a_total_count_beyond_the_bound_fails_at_the_first_page(mock: respx.MockRouter) -> None:
    big = httpx.Response(200, json={"hasMore": True, "CallVolumeUpdate": [seed_record()], "totalCount": 20001})
    route = mock.post(CALLVOLUME).mock(return_value=big)
    provider, _, _ = make()
    with pytest.raises(ProviderError, match=r"20001 records for 2023-06-01T09:45:00.000Z/.* use a larger page_size"):
        await provider.fetch(NINE45, TEN)
    assert route.call_count == 1
    await provider.aclose()


async def test_has_more_with_an_empty_page_fails_instead_of_looping(mock: respx.MockRouter) -> None:
    mock.post(CALLVOLUME).mock(return_value=httpx.Response(200, json={"hasMore": True, "CallVolumeUpdate": []}))
    provider, _, _ = make()
    with pytest.raises(ProviderError, match=r"`hasMore` is true but page skip=0 is empty"):
        await provider.fetch(NINE45, TEN)
    await provider.aclose()


# --- failures ----------------------------------------------------------------------------------------------------


async def test_a_401_is_answered_once_with_a_fresh_jwt(mock: respx.MockRouter) -> None:
    route = mock.post(CALLVOLUME).mock(
        side_effect=[kore_error(401, "Invalid JWT"), httpx.Response(200, json=fixture("koreai_seed003_response.json"))]
    )
    provider, health, sleep = make()
    assert len(await provider.fetch(NINE45, TEN)) == 1
    tokens = [c.request.headers["auth"] for c in route.calls]
    jtis = {jwt.decode(t, SECRET, algorithms=["HS256"], options={"verify_exp": False})["jti"] for t in tokens}
    assert len(jtis) == 2
    assert health.api_requests == {("callvolume", "401"): 1, ("callvolume", "200"): 1}
    assert sleep.waits == []
    await provider.aclose()


async def test_a_second_401_fails_the_poll_with_the_vendor_message_and_what_to_check(mock: respx.MockRouter) -> None:
    route = mock.post(CALLVOLUME).mock(return_value=kore_error(401, "Invalid JWT"))
    provider, health, sleep = make()
    with pytest.raises(ProviderError) as info:
        await provider.fetch(NINE45, TEN)
    message = str(info.value)
    assert message.startswith(
        "data request to platform.kore.ai "
        f"POST /agentassist/api/public/analytics/account/{ACCOUNT}/callvolume: HTTP 401: 401: Invalid JWT"
    )
    assert "check client_id and client_secret" in message
    assert SECRET not in message
    assert info.value.status == 401
    assert route.call_count == 2 and sleep.waits == []  # one fresh JWT, then no retries: it will not get better
    assert health.api_requests == {("callvolume", "401"): 2}
    await provider.aclose()


async def test_a_429_is_retried_and_counted(mock: respx.MockRouter) -> None:
    limited = kore_error(429, RATE_TEXT)
    limited.headers["Retry-After"] = "7"
    mock.post(CALLVOLUME).mock(side_effect=[limited, httpx.Response(200, json=fixture("koreai_seed003_response.json"))])
    provider, health, sleep = make()
    assert len(await provider.fetch(NINE45, TEN)) == 1
    assert sleep.waits == [7.0]
    assert health.rate_limited == 1
    assert health.api_requests == {("callvolume", "429"): 1, ("callvolume", "200"): 1}
    await provider.aclose()


async def test_a_429_that_persists_fails_as_rate_limited(mock: respx.MockRouter) -> None:
    route = mock.post(CALLVOLUME).mock(return_value=kore_error(429, RATE_TEXT))
    provider, health, sleep = make()
    with pytest.raises(RateLimited, match="rate limited: 429: You've exceeded the per-minute rate limit"):
        await provider.fetch(NINE45, TEN)
    assert route.call_count == 4 and len(sleep.waits) == 3
    assert health.rate_limited == 4
    await provider.aclose()


@pytest.mark.parametrize("status", [200, 400, 403])
async def test_kore_rate_limit_text_in_any_status_is_rate_limiting(mock: respx.MockRouter, status: int) -> None:
    mock.post(CALLVOLUME).mock(
        side_effect=[kore_error(status, RATE_TEXT), httpx.Response(200, json=fixture("koreai_seed003_response.json"))]
    )
    provider, health, sleep = make()
    assert len(await provider.fetch(NINE45, TEN)) == 1
    assert health.rate_limited == 1
    assert health.api_requests == (
        {("callvolume", str(status)): 1, ("callvolume", "200"): 1} if status != 200 else {("callvolume", "200"): 2}
    )
    assert len(sleep.waits) == 1
    await provider.aclose()


async def test_kore_rate_limit_text_that_persists_fails_as_rate_limited(mock: respx.MockRouter) -> None:
    mock.post(CALLVOLUME).mock(return_value=httpx.Response(200, text=RATE_TEXT))
    provider, _, _ = make()
    with pytest.raises(RateLimited, match="rate limited: You've exceeded the per-minute rate limit"):
        await provider.fetch(NINE45, TEN)
    await provider.aclose()


async def test_a_5xx_is_retried_with_backoff_then_succeeds(mock: respx.MockRouter) -> None:
    mock.post(CALLVOLUME).mock(
        side_effect=[
            httpx.Response(502, text="bad gateway"),
            httpx.Response(503),
            httpx.Response(200, json=fixture("koreai_seed003_response.json")),
        ]
    )
    provider, health, sleep = make()
    assert len(await provider.fetch(NINE45, TEN)) == 1
    assert len(sleep.waits) == 2 and 1.0 <= sleep.waits[0] <= 2.0
    assert health.api_requests == {("callvolume", "502"): 1, ("callvolume", "503"): 1, ("callvolume", "200"): 1}
    await provider.aclose()


async def test_a_5xx_that_persists_fails_the_poll_with_the_status(mock: respx.MockRouter) -> None:
    mock.post(CALLVOLUME).mock(return_value=kore_error(500, "Internal Server Error"))
    provider, _, _ = make()
    with pytest.raises(ProviderError, match=r"HTTP 500: 500: Internal Server Error$") as info:
        await provider.fetch(NINE45, TEN)
    assert info.value.status == 500
    await provider.aclose()


async def test_a_timeout_is_retried_then_fails_the_poll(mock: respx.MockRouter) -> None:
    mock.post(CALLVOLUME).mock(side_effect=httpx.ReadTimeout("read timed out"))
    provider, health, sleep = make()
    with pytest.raises(
        ProviderError,
        match=rf"^{HERE}: timed out$",
    ):
        await provider.fetch(NINE45, TEN)
    assert health.api_requests == {("callvolume", "error"): 4}
    assert len(sleep.waits) == 3
    await provider.aclose()


async def test_a_kore_error_body_with_a_200_fails_the_poll_with_kore_words(mock: respx.MockRouter) -> None:
    mock.post(CALLVOLUME).mock(return_value=kore_error(200, "Analytics is temporarily unavailable"))
    provider, _, _ = make()
    with pytest.raises(
        ProviderError, match=rf"^{HERE}: callvolume: answered 200 with an error: 200: Analytics is temporarily"
    ):
        await provider.fetch(NINE45, TEN)
    await provider.aclose()


async def test_malformed_json_fails_the_poll(mock: respx.MockRouter) -> None:
    mock.post(CALLVOLUME).mock(
        return_value=httpx.Response(200, text='{"hasMore": fal', headers={"Content-Type": "application/json"})
    )
    provider, _, _ = make()
    with pytest.raises(ProviderError, match=r"callvolume: response is not JSON \(HTTP 200"):
        await provider.fetch(NINE45, TEN)
    await provider.aclose()


async def test_a_missing_field_fails_the_poll_naming_record_and_field(mock: respx.MockRouter) -> None:
    broken = seed_record(_id="b")
    del broken["intervalStartTimeStamp"]  # essential: a counter left out would be zero (issue 13)
    route = mock.post(CALLVOLUME).mock(
        side_effect=[
            httpx.Response(200, json={"hasMore": True, "CallVolumeUpdate": [seed_record()], "totalCount": 2}),
            httpx.Response(200, json={"hasMore": False, "CallVolumeUpdate": [broken], "totalCount": 2}),
        ]
    )
    provider, _, _ = make(page_size=1)
    with pytest.raises(ProviderError) as caught:  # the record's index counts across pages, as `skip` does
        await provider.fetch(NINE45, TEN)
    assert re.fullmatch(
        rf"{HERE}: callvolume response: Object missing required field `intervalStartTimeStamp` - at "
        r"`\$\.CallVolumeUpdate\[1\]`",
        str(caught.value),
    )
    await provider.aclose()
    assert [json.loads(call.request.content)["skip"] for call in route.calls] == [0, 1]


async def test_a_misaligned_record_fails_the_poll_instead_of_being_misplaced(mock: respx.MockRouter) -> None:
    odd = seed_record(
        intervalStartTimeStamp="2023-06-01T09:50:00.000Z", intervalEndTimeStamp="2023-06-01T10:05:00.000Z"
    )
    mock.post(CALLVOLUME).mock(return_value=httpx.Response(200, json={"hasMore": False, "CallVolumeUpdate": [odd]}))
    provider, _, _ = make()
    with pytest.raises(
        ProviderError,
        match=r"CallVolumeUpdate\[0\] covers 2023-06-01T09:50:00.000Z/2023-06-01T10:05:00.000Z, "
        r"which is not inside one 15m bucket",
    ):
        await provider.fetch(NINE45 - 3600, TEN)
    await provider.aclose()


# --- units ---------------------------------------------------------------------------------------------------------


async def test_time_unit_s_reads_seconds(mock: respx.MockRouter) -> None:
    record = seed_record(conversationHandleTime=68, conversationTalkTime=64, acwDuration=4)
    mock.post(CALLVOLUME).mock(return_value=httpx.Response(200, json={"hasMore": False, "CallVolumeUpdate": [record]}))
    provider, _, _ = make(time_unit="s")
    [bucket] = await provider.fetch(NINE45, TEN)
    assert (bucket.values[Field.HANDLE_TIME], bucket.values[Field.TALK_TIME], bucket.values[Field.ACW_TIME]) == (
        68,
        64,
        4,
    )
    await provider.aclose()


async def test_an_aht_above_4h_warns_once_per_poll_about_time_unit(
    mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    records = [seed_record(_id=f"r{i}", queueId=f"q{i}") for i in range(3)]  # ms read as seconds: 18.9 h each
    mock.post(CALLVOLUME).mock(return_value=httpx.Response(200, json={"hasMore": False, "CallVolumeUpdate": records}))
    provider, _, _ = make(time_unit="s")
    with caplog.at_level(logging.WARNING, logger="aht_exporter.providers.koreai"):
        await provider.fetch(NINE45, TEN)
    [warning] = [r for r in caplog.records if r.name == "aht_exporter.providers.koreai"]
    assert warning.getMessage() == "implausible AHT: check time_unit"
    assert warning.__dict__["source"] == "kore-us"
    assert warning.__dict__["aht_seconds"] == 68043
    assert "set time_unit: ms" in warning.__dict__["hint"]
    await provider.aclose()


async def test_a_plausible_aht_does_not_warn(mock: respx.MockRouter, caplog: pytest.LogCaptureFixture) -> None:
    mock.post(CALLVOLUME).mock(return_value=httpx.Response(200, json=fixture("koreai_seed003_response.json")))
    provider, _, _ = make()
    with caplog.at_level(logging.WARNING):
        await provider.fetch(NINE45, TEN)
    assert not [r for r in caplog.records if r.name == "aht_exporter.providers.koreai"]
    await provider.aclose()


# --- 60 requests a minute per account ----------------------------------------------------------------------------


WINDOW = 60 + PACING_SLACK  # no more than the limit in any such span as sent


async def test_a_few_pages_go_out_at_once(mock: respx.MockRouter) -> None:
    # Kore documents a count per minute, not a spacing: a poll's five pages need not wait five seconds.
    server = PagingServer(records_for_queues(5))
    mock.post(CALLVOLUME).mock(side_effect=server)
    provider, _, _ = make(page_size=1)
    await provider.fetch(NINE45, TEN)
    assert len(server.times) == 5 and server.times[-1] - server.times[0] < 0.01
    await provider.aclose()


async def test_requests_never_exceed_60_in_any_minute_retries_included(mock: respx.MockRouter) -> None:
    # Every 10th request fails once with a 503: its retry takes a place in the budget like any other request.
    server = PagingServer(records_for_queues(130), faults=lambda n: httpx.Response(503) if n % 10 == 0 else None)
    mock.post(CALLVOLUME).mock(side_effect=server)
    provider, health, _ = make(page_size=1)
    started = asyncio.get_running_loop().time()

    buckets = await provider.fetch(NINE45, TEN)

    assert len(buckets) == 130
    assert health.api_requests[("callvolume", "503")] == 14 and len(server.times) == 144
    assert most_in_any_minute(server.times) <= 60
    # 60 at once, 60 more a window later, the last 24 a window after that: no time wasted either.
    assert server.times[59] - started < 10
    assert server.times[60] - server.times[0] >= WINDOW - 1e-6
    assert server.times[-1] - started == pytest.approx(2 * WINDOW, abs=0.1)
    await provider.aclose()


async def test_sources_of_one_account_share_the_pace(mock: respx.MockRouter) -> None:
    server = PagingServer(records_for_queues(50))
    mock.post(CALLVOLUME).mock(side_effect=server)
    accounts = Accounts()  # what the exporter hands every provider it builds
    first, _, _ = make(accounts, page_size=1)
    second, _, _ = make(accounts, page_size=1, name="kore-us-queues", group_by=["queue"])

    await asyncio.gather(first.fetch(NINE45, TEN), second.fetch(NINE45, TEN))

    assert len(server.times) == 100
    assert most_in_any_minute(server.times) <= 60
    assert sorted(server.times)[60] - min(server.times) >= WINDOW - 1e-6
    await first.aclose()
    await second.aclose()


async def test_other_accounts_are_paced_separately(mock: respx.MockRouter) -> None:
    ours = PagingServer(records_for_queues(3))
    theirs = PagingServer(records_for_queues(3))
    mock.post(CALLVOLUME).mock(side_effect=ours)
    mock.post(CALLVOLUME.replace(ACCOUNT, "other-account")).mock(side_effect=theirs)
    first, _, _ = make(page_size=1)
    second, _, _ = make(page_size=1, account_id="other-account")
    await asyncio.gather(first.fetch(NINE45, TEN), second.fetch(NINE45, TEN))
    assert ours.times == pytest.approx(theirs.times)  # side by side, not one after the other
    await first.aclose()
    await second.aclose()


async def test_rate_limit_sets_the_accounts_budget(mock: respx.MockRouter) -> None:
    server = PagingServer(records_for_queues(35))
    mock.post(CALLVOLUME).mock(side_effect=server)
    provider, _, _ = make(page_size=1, rate_limit=30)
    await provider.fetch(NINE45, TEN)
    assert len(server.times) == 35 and most_in_any_minute(server.times) <= 30
    assert server.times[30] - server.times[0] >= WINDOW - 1e-6  # the 31st waits for the window
    await provider.aclose()


async def test_an_unreachable_api_host_is_reported_as_the_data_step_with_its_host(mock: respx.MockRouter) -> None:
    """Kore.ai has no token request (each request carries a JWT minted here): what can be unreachable is the
    API host, and its error says the data step and that host."""
    route = mock.post(CALLVOLUME).mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
    provider, health, sleep = make()
    with pytest.raises(ProviderError) as info:
        await provider.fetch(NINE45, TEN)
    await provider.aclose()
    assert str(info.value) == (
        f"data request to platform.kore.ai POST {httpx.URL(CALLVOLUME).path}: "
        "ConnectError: [Errno 111] Connection refused"
    )
    assert route.call_count == 4 and len(sleep.waits) == 3
    assert health.api_requests == {("callvolume", "error"): 4}
