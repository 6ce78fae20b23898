"""The Kore.ai simulator, driven over loopback HTTP as the provider drives it: JWTs, paging, limits, truth."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio

from aht_exporter.clock import FakeClock
from aht_exporter.model import MISSING_LABEL
from aht_exporter.providers.koreai import KoreAIConfig
from aht_exporter.registry import build_config
from aht_exporter.simulator.faults import Fault
from aht_exporter.simulator.koreai import (
    COUNTERS,
    DEMO_ACCOUNT_ID,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_ORG_ID,
    RATE_LIMIT_TEXT,
    KoreAISimulator,
    demo_source,
)
from aht_exporter.simulator.workload import Workload
from aht_exporter.timebuckets import parse_iso

NOW = 1767268800  # 2026-01-01T12:00:00Z
START, END = NOW - 4 * 3600, NOW
PATH = f"/agentassist/api/public/analytics/account/{DEMO_ACCOUNT_ID}/callvolume"

Key = tuple[tuple[str, str], ...]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def workload() -> Workload:
    return Workload(seed=11, queues=4, agents=12)


@pytest.fixture
def options() -> dict[str, Any]:
    """Keyword arguments of the simulator; a test overrides this fixture to change them."""
    return {}


@pytest_asyncio.fixture
async def sim(workload: Workload, clock: FakeClock, options: dict[str, Any]) -> AsyncIterator[KoreAISimulator]:
    simulator = KoreAISimulator(workload, clock, **options)
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest_asyncio.fixture
async def client(sim: KoreAISimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.base_url) as c:
        yield c


def token(clock: FakeClock, **changes: Any) -> str:
    claims: dict[str, Any] = {
        "appId": DEMO_CLIENT_ID,
        "sub": DEMO_CLIENT_ID,
        "iat": int(clock.now()),
        "exp": int(clock.now()) + 300,
        "jti": uuid.uuid4().hex,
    }
    secret = changes.pop("secret", DEMO_CLIENT_SECRET)
    for key, value in changes.items():
        if value is None:
            claims.pop(key)
        else:
            claims[key] = value
    return jwt.encode(claims, secret, algorithm="HS256")


def body(start: float = START, end: float = END, skip: int = 0, limit: int = 100, **changes: Any) -> dict[str, Any]:
    def iso(t: float) -> str:
        from aht_exporter.timebuckets import isoformat_z

        return isoformat_z(t).replace(".000Z", "Z")

    out: dict[str, Any] = {
        "orgId": DEMO_ORG_ID,
        "fromTimeStamp": iso(start),
        "toTimeStamp": iso(end),
        "skip": skip,
        "limit": limit,
    }
    out.update(changes)
    return out


async def post(
    client: httpx.AsyncClient, clock: FakeClock, payload: Any = None, auth: str | None = None
) -> httpx.Response:
    headers = {"auth": token(clock) if auth is None else auth}
    return await client.post(PATH, json=body() if payload is None else payload, headers=headers)


async def all_records(client: httpx.AsyncClient, clock: FakeClock, limit: int = 100, **kw: Any) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for _ in range(1000):
        reply = (await post(client, clock, body(skip=len(records), limit=limit, **kw))).json()
        records += reply["CallVolumeUpdate"]
        if not reply["hasMore"]:
            return records
    raise AssertionError("never ended")


def kore_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    [error] = r.json()["errors"]
    assert error["code"] == status
    return str(error["msg"])


# --- auth -------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_signed_jwt_in_the_auth_header_opens_the_api(client: httpx.AsyncClient, clock: FakeClock) -> None:
    r = await post(client, clock)
    assert r.status_code == 200
    assert set(r.json()) == {"hasMore", "CallVolumeUpdate", "totalCount"}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"secret": "not-the-secret-but-long-enough-0123456789"}, "Invalid JWT: Signature verification failed"),
        ({"appId": "cs-someone-else"}, "unknown appId"),
        ({"appId": None}, "unknown appId"),
        ({"sub": None}, "sub is missing"),
        ({"jti": None}, "jti is missing"),
        ({"iat": None}, "iat and exp are required"),
        ({"exp": NOW}, "token expired"),
        ({"exp": NOW + 7200}, "exp more than an hour after it"),
        ({"iat": NOW + 600, "exp": NOW + 900}, "iat in the future"),
    ],
)
async def test_a_bad_jwt_is_a_401(
    client: httpx.AsyncClient, clock: FakeClock, sim: KoreAISimulator, changes: dict[str, Any], message: str
) -> None:
    r = await post(client, clock, auth=token(clock, **changes))
    assert message in kore_error(r, 401)
    assert not sim.bodies


@pytest.mark.asyncio
async def test_no_auth_header_or_a_bearer_token_is_a_401(client: httpx.AsyncClient, clock: FakeClock) -> None:
    assert "auth header is missing" in kore_error(await client.post(PATH, json=body()), 401)
    r = await client.post(PATH, json=body(), headers={"Authorization": f"Bearer {token(clock)}"})
    kore_error(r, 401)


@pytest.mark.asyncio
async def test_a_jti_is_accepted_once(client: httpx.AsyncClient, clock: FakeClock) -> None:
    once = token(clock)
    assert (await post(client, clock, auth=once)).status_code == 200
    assert "jti already used" in kore_error(await post(client, clock, auth=once), 401)


@pytest.mark.asyncio
async def test_the_token_expires_by_the_injected_clock(client: httpx.AsyncClient, clock: FakeClock) -> None:
    soon = token(clock)
    clock.advance(300)
    assert "token expired" in kore_error(await post(client, clock, auth=soon), 401)


# --- requests ----------------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (body(orgId="o-other"), "orgId"),
        (body(toTimeStamp=None), "toTimeStamp is required"),
        (body(fromTimeStamp="yesterday"), "fromTimeStamp is not an ISO-8601 timestamp"),
        (body(limit=101), "limit must be an integer from 1 to 100"),
        (body(limit=0), "limit must be an integer from 1 to 100"),
        (body(skip=-1), "skip must be a non-negative integer"),
        (body(start=END, end=START), "toTimeStamp is before fromTimeStamp"),
        ([], "must be a JSON object"),
    ],
)
async def test_a_bad_request_is_a_400(client: httpx.AsyncClient, clock: FakeClock, payload: Any, message: str) -> None:
    assert message in kore_error(await post(client, clock, payload), 400)


@pytest.mark.asyncio
async def test_another_account_or_path_is_a_404(client: httpx.AsyncClient, clock: FakeClock) -> None:
    other = PATH.replace(DEMO_ACCOUNT_ID, "someone-else")
    kore_error(await client.post(other, json=body(), headers={"auth": token(clock)}), 404)
    kore_error(await client.get(PATH), 404)


# --- records ---------------------------------------------------------------------------------------------------


SEED_KEYS = [
    "_id", "intervalStartTimeStamp", "orgId", "queueId", "source", "__v", "intervalEndTimeStamp",
    "offeredContacts", "answeredContacts", "maxQueueHoldTimeAnswered", "queueHoldTimeAnswered", "acwDuration",
    "completedContacts", "conversationHandleTime", "conversationTalkTime", "holdDuration", "messageCount",
    "savedMessageCount", "csatResponses", "csatScore", "abandonedContacts", "maxqueueHoldTimeAbandoned",
    "queueHoldTimeAbandoned", "iId", "queueName",
]  # fmt: skip
DENSE = {"sparse_records": False}  # the sample's shape only: every queue set, every counter
BEFORE_QUEUE = {"before_queue_ms": 60_000}  # abandoned in under a minute: before reaching a queue


@pytest.mark.asyncio
@pytest.mark.parametrize("options", [DENSE])
async def test_records_are_15_minute_intervals_per_queue_and_source_in_seed_003_shape(
    client: httpx.AsyncClient, clock: FakeClock, workload: Workload
) -> None:
    records = await all_records(client, clock)
    names = dict(workload.queues)
    for r in records:
        assert list(r) == SEED_KEYS
        start, end = parse_iso(r["intervalStartTimeStamp"]), parse_iso(r["intervalEndTimeStamp"])
        assert end - start == 900 and start % 900 == 0
        assert r["intervalStartTimeStamp"].endswith(":00.000Z")
        assert r["source"] in {"voice", "rtm", "email", "message", "callback"}
        assert r["queueName"] == names[r["queueId"]]
        assert r["conversationHandleTime"] == r["conversationTalkTime"] + r["holdDuration"] + r["acwDuration"]
        assert r["offeredContacts"] == r["answeredContacts"] + r["abandonedContacts"]
        assert r["completedContacts"] == r["answeredContacts"]
    keys = [(r["intervalStartTimeStamp"], r["queueId"], r["source"]) for r in records]
    assert len(keys) == len(set(keys)) and keys == sorted(keys)
    assert len({r["_id"] for r in records}) == len(records)


@pytest.mark.asyncio
@pytest.mark.parametrize("options", [BEFORE_QUEUE])
async def test_records_are_sparse_as_issue_13_expects_of_real_tenants(
    client: httpx.AsyncClient, clock: FakeClock, workload: Workload, sim: KoreAISimulator
) -> None:
    """Contacts abandoned before a queue come with `queueId: null`, and about half the records (by `_id`) leave
    out their zero counters (by default); every record keeps its interval, and the counters still add up."""
    records = await all_records(client, clock)
    names = dict(workload.queues)
    sparse = [r for r in records if set(SEED_KEYS) - set(r)]
    assert 0.3 < len(sparse) / len(records) < 0.7
    for r in records:
        assert [k for k in SEED_KEYS if k in r] == list(r)  # the sample's order, some keys left out
        left_out = set(SEED_KEYS) - set(r)
        assert left_out <= COUNTERS, left_out
        if left_out:
            assert all(r[k] != 0 for k in COUNTERS & set(r))  # a sparse record leaves out every zero
        value = Counter({k: r.get(k, 0) for k in COUNTERS})
        assert value["conversationHandleTime"] == (
            value["conversationTalkTime"] + value["holdDuration"] + value["acwDuration"]
        )
        assert value["offeredContacts"] == value["answeredContacts"] + value["abandonedContacts"]
        assert r["queueName"] == (None if r["queueId"] is None else names[r["queueId"]])
    null_queue = [r for r in records if r["queueId"] is None]
    assert null_queue, "the workload has contacts abandoned before a queue"
    for r in null_queue:
        assert r.get("answeredContacts", 0) == 0 and r["abandonedContacts"] == r["offeredContacts"] > 0
        assert r.get("queueHoldTimeAbandoned", 0) == 0  # never in a queue: no queue wait
    # Each is a contact the workload says was abandoned with a short wait, counted once.
    short = [c for c in workload.contacts(START, END + 900, NOW) if sim.before_queue(c)]
    assert sum(r["offeredContacts"] for r in null_queue) == len(short) > 0
    assert all(c.abandoned and c.wait_ms < 60_000 for c in short)
    keys = [(r["intervalStartTimeStamp"], r["queueId"] or "", r["source"]) for r in records]
    assert len(keys) == len(set(keys)) and keys == sorted(keys)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "options",
    [{}, BEFORE_QUEUE, DENSE, {"split_records": True, **BEFORE_QUEUE}],
    ids=["sparse", "before-queue", "dense", "split"],
)
async def test_records_add_up_to_the_workload_truth_in_milliseconds(
    client: httpx.AsyncClient, clock: FakeClock, sim: KoreAISimulator
) -> None:
    records = [r for r in await all_records(client, clock) if parse_iso(r["intervalStartTimeStamp"]) < END]
    got: dict[Key, Counter[str]] = {}
    media = {"rtm": "chat"}
    for r in records:
        key: Key = (("media_type", media.get(r["source"], r["source"])), ("queue", r["queueId"] or MISSING_LABEL))
        got.setdefault(key, Counter()).update(
            {k: r.get(k, 0) for k in ("conversationHandleTime", "completedContacts", "holdDuration", "offeredContacts")}
        )
    truth = sim.truth(START, END, ["media_type", "queue"])
    assert got.keys() == truth.keys()
    for key, want in truth.items():
        assert got[key]["conversationHandleTime"] / 1000 == want.handle_seconds
        assert got[key]["completedContacts"] == want.contacts_handled
        assert got[key]["holdDuration"] / 1000 == want.hold_seconds
        assert got[key]["offeredContacts"] == want.contacts_offered


@pytest.mark.asyncio
async def test_to_timestamp_includes_the_interval_starting_at_it(client: httpx.AsyncClient, clock: FakeClock) -> None:
    records = await all_records(client, clock, start=END - 1800, end=END - 900)
    starts = {r["intervalStartTimeStamp"] for r in records}
    assert starts == {"2026-01-01T11:30:00.000Z", "2026-01-01T11:45:00.000Z"}


@pytest.mark.asyncio
@pytest.mark.parametrize("workload", [Workload(seed=2, report_lag=900)])
async def test_a_closed_interval_is_revised_as_late_contacts_show_up(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    seen: list[dict[str, tuple[int, int]]] = []
    for _ in range(4):
        records = await all_records(client, clock, start=END - 900, end=END - 900)
        seen.append({r["_id"]: (r["__v"], r["offeredContacts"]) for r in records})
        clock.advance(300)
    assert set(seen[0]) <= set(seen[-1])  # the same records, by _id: updated, not replaced
    revised = [i for i in seen[0] if seen[-1][i][0] > seen[0][i][0]]
    assert revised
    for i in revised:
        assert seen[-1][i][1] > seen[0][i][1]  # more contacts, a higher __v


@pytest.mark.asyncio
@pytest.mark.parametrize("options", [{"rate_limit_per_minute": 10_000}])
@pytest.mark.parametrize("limit", [2, 7, 100])
async def test_pages_follow_skip_and_limit_with_has_more_and_total_count(
    client: httpx.AsyncClient, clock: FakeClock, limit: int
) -> None:
    hour = {"start": END - 3600, "end": END}
    total = (await post(client, clock, body(**hour))).json()["totalCount"]
    assert total > 7
    paged = await all_records(client, clock, limit=limit, **hour)
    full = await all_records(client, clock, limit=100, **hour)
    assert paged == full and len(full) == total
    last = (await post(client, clock, body(skip=total - 1, limit=limit, **hour))).json()
    assert last["hasMore"] is False and len(last["CallVolumeUpdate"]) == 1 and last["totalCount"] == total
    beyond = (await post(client, clock, body(skip=total + 5, **hour))).json()
    assert beyond == {"hasMore": False, "CallVolumeUpdate": [], "totalCount": total}


@pytest.mark.asyncio
@pytest.mark.parametrize("options", [{"split_records": True}])
async def test_split_records_serve_one_key_as_two_records(client: httpx.AsyncClient, clock: FakeClock) -> None:
    records = await all_records(client, clock)
    keys = Counter((r["intervalStartTimeStamp"], r["queueId"], r["source"]) for r in records)
    assert 2 in keys.values()
    assert len({r["_id"] for r in records}) == len(records)


@pytest.mark.asyncio
async def test_nothing_is_reported_for_the_future(client: httpx.AsyncClient, clock: FakeClock) -> None:
    reply = (await post(client, clock, body(start=END + 900, end=END + 3600))).json()
    assert reply == {"hasMore": False, "CallVolumeUpdate": [], "totalCount": 0}


# --- the rate limit ---------------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "options", [{"rate_limit_per_minute": 5}, {"rate_limit_per_minute": 5, "rate_limited_status": 200}]
)
async def test_beyond_the_limit_a_minute_kore_says_slow_down(
    client: httpx.AsyncClient, clock: FakeClock, sim: KoreAISimulator, options: dict[str, Any]
) -> None:
    for _ in range(5):
        assert "hasMore" in (await post(client, clock)).json()
        clock.advance(1)
    r = await post(client, clock)
    assert RATE_LIMIT_TEXT in kore_error(r, options.get("rate_limited_status", 429))
    assert sim.rate_limited == 1
    clock.advance(56)  # the first request leaves the window
    assert "hasMore" in (await post(client, clock)).json()


@pytest.mark.asyncio
async def test_the_default_limit_is_60_a_minute(client: httpx.AsyncClient, clock: FakeClock) -> None:
    one_interval = body(start=END - 900, end=END - 900)
    statuses = [(await post(client, clock, one_interval)).status_code for _ in range(61)]
    assert statuses == [200] * 60 + [429]


# --- faults ------------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_unauthorized_fault_lasts_until_the_next_freshly_signed_request(
    client: httpx.AsyncClient, clock: FakeClock, sim: KoreAISimulator
) -> None:
    sim.faults.inject(Fault.UNAUTHORIZED)
    assert "Invalid JWT" in kore_error(await post(client, clock), 401)
    assert (await post(client, clock)).status_code == 200
    assert sim.faults.fault is None


@pytest.mark.asyncio
async def test_schema_faults_rewrite_the_records(
    client: httpx.AsyncClient, clock: FakeClock, sim: KoreAISimulator
) -> None:
    sim.faults.inject(Fault.MISSING_FIELD, count=1)
    records = (await post(client, clock)).json()["CallVolumeUpdate"]
    # The essential field is the interval: a counter left out is zero, so deleting one would be survived.
    assert records and all("intervalStartTimeStamp" not in r and "intervalEndTimeStamp" in r for r in records)
    sim.faults.inject(Fault.WRONG_TYPE, count=1)
    records = (await post(client, clock)).json()["CallVolumeUpdate"]
    assert all(isinstance(r["conversationHandleTime"], str) for r in records if "conversationHandleTime" in r)
    assert any("conversationHandleTime" in r for r in records)
    sim.faults.inject(Fault.RATE_LIMITED, count=1)
    assert RATE_LIMIT_TEXT in kore_error(await post(client, clock), 429)


# --- the rest ----------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_requests_are_counted_per_path(client: httpx.AsyncClient, clock: FakeClock, sim: KoreAISimulator) -> None:
    await post(client, clock)
    await post(client, clock, auth="not-a-jwt")
    assert sim.requests == {PATH: 2}
    assert len(sim.bodies) == 1


@pytest.mark.asyncio
async def test_the_simulator_listens_on_loopback_until_stopped(workload: Workload, clock: FakeClock) -> None:
    sim = KoreAISimulator(workload, clock)
    with pytest.raises(RuntimeError):
        _ = sim.base_url
    url = await sim.start()
    assert url == sim.base_url and url.startswith("http://127.0.0.1:")
    await sim.stop()
    with pytest.raises(RuntimeError):
        _ = sim.base_url


def test_demo_source_is_a_valid_koreai_source() -> None:
    raw = demo_source("http://127.0.0.1:12345")
    source = build_config({"sources": [raw]}, "<demo>", {}).sources[0]
    assert isinstance(source, KoreAIConfig)
    assert (source.name, source.provider, source.api_url) == ("demo-koreai", "koreai", "http://127.0.0.1:12345")
    assert (source.account_id, source.org_id, source.client_id) == (DEMO_ACCOUNT_ID, DEMO_ORG_ID, DEMO_CLIENT_ID)
    assert len(DEMO_CLIENT_SECRET.encode()) >= 32  # no PyJWT short-key warning in the demo
