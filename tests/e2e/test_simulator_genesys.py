"""The Genesys Cloud simulator, driven over loopback HTTP as the exporter's provider would drive it."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio

from aht_exporter.clock import FakeClock
from aht_exporter.simulator.genesys import AGGREGATES_PATH, QUEUES_PATH, TOKEN_PATH, USERS_PATH, GenesysSimulator
from aht_exporter.simulator.workload import Contact, Workload

NOW = 1767268800  # 2026-01-01T12:00:00Z
START, END = NOW - 4 * 3600, NOW  # the interval most tests ask for: 08:00..12:00
INTERVAL = "2026-01-01T08:00:00Z/2026-01-01T12:00:00Z"
ALL_METRICS = ["tHandle", "tTalkComplete", "tHeldComplete", "tAcw", "tAnswered", "tAbandon", "nOffered"]
LABEL = {"mediaType": "media_type", "queueId": "queue", "userId": "agent"}

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
async def sim(workload: Workload, clock: FakeClock, options: dict[str, Any]) -> AsyncIterator[GenesysSimulator]:
    simulator = GenesysSimulator(workload, clock, **options)
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest_asyncio.fixture
async def client(sim: GenesysSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.base_url) as c:
        yield c


async def login(client: httpx.AsyncClient) -> dict[str, str]:
    r = await client.post(TOKEN_PATH, auth=("demo-client", "demo-secret"), data={"grant_type": "client_credentials"})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def query(client: httpx.AsyncClient, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    if headers is None:
        headers = await login(client)
    return await client.post(AGGREGATES_PATH, json=body, headers=headers)


def parse_interval(text: str) -> tuple[float, float]:
    start, end = text.split("/")
    return datetime.fromisoformat(start).timestamp(), datetime.fromisoformat(end).timestamp()


def key_of(group: dict[str, str]) -> Key:
    return tuple(sorted((LABEL[dim], value) for dim, value in group.items()))


def summed(results: list[dict[str, Any]]) -> dict[Key, Counter[str]]:
    """Per group, every metric's sum and count added up over the buckets, as the exporter does."""
    out: dict[Key, Counter[str]] = {}
    for result in results:
        sums = out.setdefault(key_of(result["group"]), Counter())
        for entry in result["data"]:
            for m in entry["metrics"]:
                sums[f"{m['metric']}.sum"] += m["stats"].get("sum", 0)
                sums[f"{m['metric']}.count"] += m["stats"]["count"]
    return out


def assert_matches_truth(got: Counter[str], want: Any) -> None:
    assert got["tHandle.sum"] / 1000 == want.handle_seconds
    assert got["tHandle.count"] == want.contacts_handled
    assert got["tTalkComplete.sum"] / 1000 == want.talk_seconds
    assert got["tHeldComplete.sum"] / 1000 == want.hold_seconds
    assert got["tAcw.sum"] / 1000 == want.acw_seconds
    assert got["tAnswered.count"] == want.contacts_answered
    assert got["tAbandon.count"] == want.contacts_abandoned
    if "nOffered.count" in got:
        assert got["nOffered.count"] == want.contacts_offered


def assert_genesys_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["message"]
    uuid.UUID(body["contextId"])
    assert body["details"] == [] and body["errors"] == []
    return body


# --- login -------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_client_credentials_give_a_bearer_token_that_opens_the_api(
    client: httpx.AsyncClient, sim: GenesysSimulator
) -> None:
    r = await client.post(TOKEN_PATH, auth=("demo-client", "demo-secret"), data={"grant_type": "client_credentials"})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 86400 and body["access_token"]
    assert sim.tokens_issued == 1
    page = await client.get(QUEUES_PATH, headers={"Authorization": f"Bearer {body['access_token']}"})
    assert page.status_code == 200


@pytest.mark.asyncio
@pytest.mark.parametrize("auth", [("demo-client", "wrong"), ("someone-else", "demo-secret"), None])
async def test_bad_client_credentials_are_an_oauth_invalid_client(
    client: httpx.AsyncClient, sim: GenesysSimulator, auth: tuple[str, str] | None
) -> None:
    r = await client.post(
        TOKEN_PATH, auth=httpx.USE_CLIENT_DEFAULT if auth is None else auth, data={"grant_type": "client_credentials"}
    )
    assert r.status_code == 401
    assert r.json() == {"error": "invalid_client", "description": "client not found"}
    assert sim.tokens_issued == 0


@pytest.mark.asyncio
async def test_a_grant_other_than_client_credentials_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.post(TOKEN_PATH, auth=("demo-client", "demo-secret"), data={"grant_type": "password"})
    assert r.status_code == 400
    assert r.json()["error"] == "unsupported_grant_type"


@pytest.mark.asyncio
async def test_the_api_without_a_token_says_authentication_required(client: httpx.AsyncClient) -> None:
    assert_genesys_error(await client.get(QUEUES_PATH), 401, "authentication.required")
    r = await client.post(AGGREGATES_PATH, json={"interval": INTERVAL, "metrics": ["tHandle"]})
    assert_genesys_error(r, 401, "authentication.required")


@pytest.mark.asyncio
async def test_an_unknown_token_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.get(QUEUES_PATH, headers={"Authorization": "Bearer not-a-token"})
    assert_genesys_error(r, 401, "bad.credentials")


@pytest.mark.asyncio
@pytest.mark.parametrize("options", [{"token_lifetime": 600}])
async def test_a_token_expires_after_its_lifetime_by_the_clock(client: httpx.AsyncClient, clock: FakeClock) -> None:
    headers = await login(client)
    clock.advance(599)
    assert (await client.get(QUEUES_PATH, headers=headers)).status_code == 200
    clock.advance(1)
    assert_genesys_error(await client.get(QUEUES_PATH, headers=headers), 401, "bad.credentials")
    assert (await client.get(QUEUES_PATH, headers=await login(client))).status_code == 200


@pytest.mark.asyncio
async def test_expire_tokens_invalidates_every_issued_token(client: httpx.AsyncClient, sim: GenesysSimulator) -> None:
    first, second = await login(client), await login(client)
    sim.expire_tokens()
    for headers in (first, second):
        assert (await client.get(USERS_PATH, headers=headers)).status_code == 401
    assert (await client.get(USERS_PATH, headers=await login(client))).status_code == 200
    assert sim.tokens_issued == 3


# --- rate limit --------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("options", [{"rate_limit_per_minute": 5}])
async def test_over_the_rate_limit_a_429_says_when_to_retry(
    client: httpx.AsyncClient, sim: GenesysSimulator, clock: FakeClock
) -> None:
    headers = await login(client)
    for n in range(1, 6):
        r = await client.get(QUEUES_PATH, headers=headers)
        assert r.status_code == 200
        assert r.headers["inin-ratelimit-count"] == str(n)
        assert r.headers["inin-ratelimit-allowed"] == "5"
        assert r.headers["inin-ratelimit-reset"] == str(61 - n)  # until the first request leaves the window
        clock.advance(1)
    r = await client.get(QUEUES_PATH, headers=headers)
    body = assert_genesys_error(r, 429, "too.many.requests.retry.after")
    assert r.headers["Retry-After"] == "55"  # the first request leaves the 60 s window at NOW + 60
    assert "[55]" in body["message"]
    assert sim.rate_limited == 1
    # Another token has its own budget.
    assert (await client.get(QUEUES_PATH, headers=await login(client))).status_code == 200
    clock.advance(54)
    assert (await client.get(QUEUES_PATH, headers=headers)).status_code == 429
    clock.advance(1)
    r = await client.get(QUEUES_PATH, headers=headers)
    assert r.status_code == 200
    assert r.headers["inin-ratelimit-count"] == "5"
    assert sim.rate_limited == 2


@pytest.mark.asyncio
async def test_every_response_carries_the_rate_limit_headers(client: httpx.AsyncClient) -> None:
    responses = [
        await client.post(TOKEN_PATH, auth=("demo-client", "demo-secret"), data={"grant_type": "client_credentials"}),
        await client.get(QUEUES_PATH),
        await client.get("/api/v2/nowhere"),
        await query(client, {"interval": INTERVAL, "metrics": ["tHandle"]}),
        await query(client, {"metrics": ["tHandle"]}),
    ]
    for r in responses:
        assert {"inin-ratelimit-count", "inin-ratelimit-allowed", "inin-ratelimit-reset"} <= set(r.headers)


# --- aggregates: validation --------------------------------------------------------------------------

DAY = 86400


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({"metrics": ["tHandle"]}, "interval is required"),
        ({"interval": "2026-01-01T08:00:00Z", "metrics": ["tHandle"]}, "start/end"),
        ({"interval": "yesterday/today", "metrics": ["tHandle"]}, "not an ISO-8601 date-time"),
        ({"interval": "2026-01-01T08:00:00/2026-01-01T09:00:00", "metrics": ["tHandle"]}, "time zone"),
        ({"interval": "2026-01-01T09:00:00Z/2026-01-01T08:00:00Z", "metrics": ["tHandle"]}, "ends before"),
        ({"interval": INTERVAL, "granularity": "P1M", "metrics": ["tHandle"]}, "ISO-8601 period"),
        ({"interval": INTERVAL, "granularity": "30m", "metrics": ["tHandle"]}, "ISO-8601 period"),
        ({"interval": INTERVAL, "granularity": "PT0M", "metrics": ["tHandle"]}, "empty"),
        ({"interval": INTERVAL, "groupBy": ["wrapUpCode"], "metrics": ["tHandle"]}, "groupBy: 'wrapUpCode'"),
        ({"interval": INTERVAL, "groupBy": "queueId", "metrics": ["tHandle"]}, "groupBy must be a list"),
        ({"interval": INTERVAL}, "metrics must be a list"),
        ({"interval": INTERVAL, "metrics": []}, "metrics must not be empty"),
        ({"interval": INTERVAL, "metrics": ["tHold"]}, "metrics: 'tHold'"),  # seed 004's made-up metric
        ({"interval": INTERVAL, "groupBy": ["userId"], "metrics": ["nOffered"]}, "queue-scoped"),
        ({"interval": INTERVAL, "metrics": ["tHandle"], "filter": {"type": "xor", "predicates": []}}, "type"),
        ({"interval": INTERVAL, "metrics": ["tHandle"], "filter": {"type": "and"}}, "neither"),
        (
            {
                "interval": INTERVAL,
                "metrics": ["tHandle"],
                "filter": {"type": "and", "predicates": [{"dimension": "wrapUpCode", "value": "x"}]},
            },
            "dimension",
        ),
        (
            {
                "interval": INTERVAL,
                "metrics": ["tHandle"],
                "filter": {
                    "type": "and",
                    "predicates": [{"dimension": "mediaType", "operator": "contains", "value": "v"}],
                },
            },
            "operator",
        ),
        (
            {
                "interval": INTERVAL,
                "metrics": ["tHandle"],
                "filter": {"type": "and", "predicates": [{"dimension": "mediaType", "value": 3}]},
            },
            "value must be a string",
        ),
        (
            {
                "interval": INTERVAL,
                "metrics": ["tHandle"],
                "filter": {"type": "and", "clauses": [{"type": "or", "clauses": []}]},
            },
            "cannot hold clauses",
        ),
        (
            {"interval": "2026-01-01T00:00:00Z/2026-02-02T00:00:00Z", "metrics": ["tHandle"]},
            "Query interval is too large: the maximum is 31 days",
        ),
    ],
)
async def test_a_bad_query_is_a_400_naming_what_is_wrong(client: httpx.AsyncClient, body: Any, message: str) -> None:
    assert message in assert_genesys_error(await query(client, body), 400, "bad.request")["message"]


@pytest.mark.asyncio
async def test_a_body_that_is_not_json_is_a_400(client: httpx.AsyncClient) -> None:
    r = await client.post(AGGREGATES_PATH, content=b"{not json", headers=await login(client))
    assert "not valid JSON" in assert_genesys_error(r, 400, "bad.request")["message"]


@pytest.mark.asyncio
@pytest.mark.parametrize("options", [{"max_interval_seconds": 2 * DAY}])
async def test_the_longest_interval_allowed_is_accepted(client: httpx.AsyncClient) -> None:
    ok = await query(client, {"interval": "2025-12-30T12:00:00Z/2026-01-01T12:00:00Z", "metrics": ["tHandle"]})
    assert ok.status_code == 200
    too_long = await query(client, {"interval": "2025-12-30T11:59:59Z/2026-01-01T12:00:00Z", "metrics": ["tHandle"]})
    assert "too large: the maximum is 2 days" in assert_genesys_error(too_long, 400, "bad.request")["message"]


# --- aggregates: the figures -------------------------------------------------------------------------

GROUPINGS = [
    [],
    ["mediaType"],
    ["queueId"],
    ["userId"],
    ["mediaType", "queueId"],
    ["queueId", "userId"],
    ["mediaType", "queueId", "userId"],
]


@pytest.mark.asyncio
@pytest.mark.parametrize("granularity", ["PT30M", "PT15M"])
@pytest.mark.parametrize("group_by", GROUPINGS, ids=lambda g: "+".join(g) or "none")
async def test_aggregates_add_up_to_the_truth_per_group_and_per_bucket(
    client: httpx.AsyncClient, sim: GenesysSimulator, group_by: list[str], granularity: str
) -> None:
    metrics = [m for m in ALL_METRICS if m != "nOffered" or "queueId" in group_by or "userId" not in group_by]
    r = await query(client, {"interval": INTERVAL, "granularity": granularity, "groupBy": group_by, "metrics": metrics})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    labels = [LABEL[d] for d in group_by]

    truth = sim.truth(START, END, labels)
    got = summed(results)
    assert set(got) == set(truth)
    for key, want in truth.items():
        assert_matches_truth(got[key], want)

    step = {"PT30M": 1800, "PT15M": 900}[granularity]
    for result in results:
        assert set(result["group"]) == set(group_by)
        for entry in result["data"]:
            start, end = parse_interval(entry["interval"])
            assert (start - START) % step == 0 and end - start == step
            bucket_truth = sim.truth(start, end, labels)[key_of(result["group"])]
            assert_matches_truth(
                summed([{"group": result["group"], "data": [entry]}])[key_of(result["group"])], bucket_truth
            )


@pytest.mark.asyncio
async def test_stats_are_sum_count_min_max_of_whole_milliseconds(client: httpx.AsyncClient, workload: Workload) -> None:
    queue_id = workload.queues[0][0]
    body = {
        "interval": INTERVAL,
        "groupBy": ["queueId"],
        "metrics": ["tHandle", "tHeldComplete", "tAbandon", "nOffered"],
        "filter": {"type": "and", "predicates": [{"dimension": "queueId", "value": queue_id}]},
    }
    results = (await query(client, body)).json()["results"]
    assert [res["group"] for res in results] == [{"queueId": queue_id}]
    [entry] = results[0]["data"]
    assert entry["interval"] == "2026-01-01T08:00:00.000Z/2026-01-01T12:00:00.000Z"  # no granularity: one bucket
    stats = {m["metric"]: m["stats"] for m in entry["metrics"]}
    assert list(stats) == ["tHandle", "tHeldComplete", "tAbandon", "nOffered"]

    contacts = [c for c in workload.contacts(START, END, NOW) if c.queue_id == queue_id]
    handle = [c.handle_ms for c in contacts if not c.abandoned]
    held = [c.hold_ms for c in contacts if c.hold_ms > 0]
    waits = [c.wait_ms for c in contacts if c.abandoned]
    assert stats["tHandle"] == {"max": max(handle), "min": min(handle), "count": len(handle), "sum": sum(handle)}
    assert list(stats["tHandle"]) == ["max", "min", "count", "sum"]  # seed 000's order
    assert stats["tHeldComplete"] == {"max": max(held), "min": min(held), "count": len(held), "sum": sum(held)}
    assert stats["tAbandon"] == {"max": max(waits), "min": min(waits), "count": len(waits), "sum": sum(waits)}
    assert stats["nOffered"] == {"count": len(contacts)}


@pytest.mark.asyncio
async def test_the_vendor_sample_interval_with_milliseconds_is_echoed(client: httpx.AsyncClient) -> None:
    body = {"interval": "2026-01-01T00:00:00.000Z/2026-01-01T11:59:59.999Z", "metrics": ["tHandle"]}
    results = (await query(client, body)).json()["results"]
    assert [entry["interval"] for entry in results[0]["data"]] == ["2026-01-01T00:00:00.000Z/2026-01-01T11:59:59.999Z"]


@pytest.mark.asyncio
@pytest.mark.parametrize("options", [{"max_interval_seconds": 7 * DAY}])
async def test_day_granularity_buckets_by_utc_day(client: httpx.AsyncClient, sim: GenesysSimulator) -> None:
    body = {"interval": "2025-12-29T00:00:00Z/2026-01-01T12:00:00Z", "granularity": "P1D", "metrics": ["tHandle"]}
    [result] = (await query(client, body)).json()["results"]
    intervals = [entry["interval"] for entry in result["data"]]
    assert intervals == [
        "2025-12-29T00:00:00.000Z/2025-12-30T00:00:00.000Z",
        "2025-12-30T00:00:00.000Z/2025-12-31T00:00:00.000Z",
        "2025-12-31T00:00:00.000Z/2026-01-01T00:00:00.000Z",
        "2026-01-01T00:00:00.000Z/2026-01-01T12:00:00.000Z",  # the last bucket ends with the interval
    ]
    assert summed([result])[()]["tHandle.count"] == sim.truth(NOW - 3.5 * DAY, NOW, [])[()].contacts_handled


@pytest.mark.asyncio
@pytest.mark.parametrize("workload", [Workload(seed=4, contacts_per_slot=0.4)])
@pytest.mark.parametrize("options", [{"zero_metrics": False}])
async def test_buckets_groups_and_metrics_without_data_are_left_out(
    client: httpx.AsyncClient, workload: Workload
) -> None:
    body = {"interval": INTERVAL, "granularity": "PT5M", "groupBy": ["userId"], "metrics": ["tHandle", "tAbandon"]}
    results = (await query(client, body)).json()["results"]
    contacts = [c for c in workload.contacts(START, END, NOW) if not c.abandoned]
    want_buckets = {(c.agent_id, int(c.ended_at - START) // 300) for c in contacts}
    got_buckets = set()
    for result in results:
        for entry in result["data"]:
            start, _ = parse_interval(entry["interval"])
            got_buckets.add((result["group"]["userId"], int(start - START) // 300))
            # abandoned contacts have no user: tAbandon has no data in user groups, so it is absent
            assert [m["metric"] for m in entry["metrics"]] == ["tHandle"]
    assert got_buckets == want_buckets
    assert len(want_buckets) < 48  # some of the 48 five-minute buckets were empty, and were left out
    assert {res["group"]["userId"] for res in results} == {c.agent_id for c in contacts}


@pytest.mark.asyncio
async def test_by_default_a_metric_without_data_in_a_bucket_with_data_is_count_0_without_sum(
    client: httpx.AsyncClient, workload: Workload
) -> None:
    """Issue 13's sparse shape: `{"count": 0}`, no `sum`, `min` or `max` (every stat is optional in the SDK's
    StatisticalSummary). Groups and buckets without any data are still left out."""
    metrics = ["tHandle", "tHeldComplete", "tAbandon", "nOffered"]
    body = {"interval": INTERVAL, "granularity": "PT5M", "groupBy": ["queueId"], "metrics": metrics}
    results = (await query(client, body)).json()["results"]
    contacts = workload.contacts(START, END, NOW)
    buckets = {(c.queue_id, int(c.ended_at - START) // 300) for c in contacts}
    zeros: Counter[str] = Counter()
    got_buckets = set()
    for result in results:
        for entry in result["data"]:
            start, _ = parse_interval(entry["interval"])
            got_buckets.add((result["group"]["queueId"], int(start - START) // 300))
            assert [m["metric"] for m in entry["metrics"]] == metrics  # every metric asked for, in order
            for m in entry["metrics"]:
                assert m["stats"]["count"] >= 0
                if m["stats"]["count"] == 0:
                    assert m["stats"] == {"count": 0}
                    zeros[m["metric"]] += 1
    assert got_buckets == buckets and len(buckets) < 4 * 48  # buckets without data: still left out
    assert zeros["tHandle"] and zeros["tHeldComplete"] and zeros["tAbandon"]  # each shape occurs
    for result in results:  # and the zeros change no figure
        got = summed([result])[key_of(result["group"])]
        mine = [c for c in contacts if c.queue_id == result["group"]["queueId"]]
        assert got["tHandle.count"] == sum(not c.abandoned for c in mine)
        assert got["tHandle.sum"] == sum(c.handle_ms for c in mine if not c.abandoned)
        assert got["tAbandon.count"] == sum(c.abandoned for c in mine)
        assert got["nOffered.count"] == len(mine)


@pytest.mark.asyncio
async def test_a_metric_no_contact_has_gives_no_results_at_all(client: httpx.AsyncClient) -> None:
    body = {"interval": INTERVAL, "groupBy": ["userId"], "metrics": ["tAbandon"]}
    assert (await query(client, body)).json() == {"results": []}


@pytest.mark.asyncio
async def test_nothing_is_reported_for_the_future(client: httpx.AsyncClient) -> None:
    body = {"interval": "2026-01-01T12:00:00Z/2026-01-01T13:00:00Z", "metrics": ["tHandle"]}
    assert (await query(client, body)).json() == {"results": []}


@pytest.mark.asyncio
@pytest.mark.parametrize("workload", [Workload(seed=2, report_lag=900)])
async def test_contacts_show_up_only_after_the_report_lag(
    client: httpx.AsyncClient, sim: GenesysSimulator, clock: FakeClock
) -> None:
    headers = await login(client)
    body = {"interval": "2026-01-01T11:00:00Z/2026-01-01T12:00:00Z", "metrics": ["tHandle"]}
    counts = []
    for _ in range(4):
        results = (await query(client, body, headers)).json()["results"]
        counts.append(summed(results)[()]["tHandle.count"] if results else 0)
        assert counts[-1] == sim.truth(NOW - 3600, NOW, [])[()].contacts_handled
        clock.advance(300)
    assert counts == sorted(counts) and counts[0] < counts[-1]
    assert counts[-1] == sim.truth(NOW - 3600, NOW, [], as_of=NOW + 3600)[()].contacts_handled


# --- aggregates: filters -----------------------------------------------------------------------------


def predicate(dimension: str, value: str) -> dict[str, str]:
    return {"type": "dimension", "dimension": dimension, "operator": "matches", "value": value}


def handled_by_hand(workload: Workload, keep: Callable[[Contact], bool]) -> int:
    return sum(1 for c in workload.contacts(START, END, NOW) if keep(c) and not c.abandoned)


@pytest.mark.asyncio
async def test_filters_combine_clauses_and_predicates_with_and_and_or(
    client: httpx.AsyncClient, workload: Workload
) -> None:
    q0, q1 = workload.queues[0][0], workload.queues[1][0]
    cases: list[tuple[dict[str, Any], Callable[[Contact], bool]]] = [
        ({"type": "and", "predicates": [predicate("mediaType", "voice")]}, lambda c: c.media_type == "voice"),
        (
            {"type": "or", "predicates": [predicate("mediaType", "voice"), predicate("queueId", q1)]},
            lambda c: c.media_type == "voice" or c.queue_id == q1,
        ),
        (
            {"type": "and", "predicates": [predicate("mediaType", "voice"), predicate("queueId", q1)]},
            lambda c: c.media_type == "voice" and c.queue_id == q1,
        ),
        (
            {
                "type": "and",
                "clauses": [
                    {"type": "or", "predicates": [predicate("mediaType", "voice"), predicate("mediaType", "chat")]}
                ],
                "predicates": [predicate("queueId", q0)],
            },
            lambda c: c.media_type in ("voice", "chat") and c.queue_id == q0,
        ),
        (
            {
                "type": "or",
                "clauses": [
                    {"type": "and", "predicates": [predicate("mediaType", "email"), predicate("queueId", q0)]},
                    {"type": "and", "predicates": [predicate("mediaType", "chat"), predicate("queueId", q1)]},
                ],
            },
            lambda c: (c.media_type, c.queue_id) in (("email", q0), ("chat", q1)),
        ),
    ]
    headers = await login(client)
    for spec, keep in cases:
        results = (await query(client, {"interval": INTERVAL, "metrics": ["tHandle"], "filter": spec}, headers)).json()
        want = handled_by_hand(workload, keep)
        assert want > 0
        assert summed(results["results"])[()]["tHandle.count"] == want, spec


@pytest.mark.asyncio
async def test_a_filter_on_userid_exists_or_not_splits_handled_from_abandoned(
    client: httpx.AsyncClient, sim: GenesysSimulator
) -> None:
    headers = await login(client)
    truth = sim.truth(START, END, [])[()]
    for operator, metric, want in [
        ("notExists", "nOffered", truth.contacts_abandoned),
        ("exists", "nOffered", truth.contacts_handled),
    ]:
        body = {
            "interval": INTERVAL,
            "metrics": [metric],
            "filter": {"type": "and", "predicates": [{"dimension": "userId", "operator": operator}]},
        }
        assert summed((await query(client, body, headers)).json()["results"])[()][f"{metric}.count"] == want


@pytest.mark.asyncio
async def test_a_filter_matching_nothing_gives_no_results(client: httpx.AsyncClient) -> None:
    body = {
        "interval": INTERVAL,
        "metrics": ["tHandle"],
        "filter": {"type": "and", "predicates": [predicate("queueId", "no-such-queue")]},
    }
    assert (await query(client, body)).json() == {"results": []}


@pytest.mark.asyncio
@pytest.mark.parametrize("options", [{"always_group_by_media_type": True}])
async def test_groups_may_carry_media_type_unasked_and_still_add_up(
    client: httpx.AsyncClient, sim: GenesysSimulator
) -> None:
    body = {"interval": INTERVAL, "groupBy": ["queueId"], "metrics": ["tHandle"]}
    results = (await query(client, body)).json()["results"]
    assert all(set(res["group"]) == {"queueId", "mediaType"} for res in results)
    per_queue: Counter[str] = Counter()
    for res in results:
        per_queue[res["group"]["queueId"]] += res["data"][0]["metrics"][0]["stats"]["count"]
    truth = sim.truth(START, END, ["queue"])
    assert per_queue == {key[0][1]: t.contacts_handled for key, t in truth.items()}


# --- queues and users ----------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("workload", [Workload(queues=7, agents=30)])
async def test_queues_and_users_are_paged(client: httpx.AsyncClient, workload: Workload) -> None:
    headers = await login(client)
    for path, expected in ((QUEUES_PATH, workload.queues), (USERS_PATH, workload.agents)):
        seen: list[tuple[str, str]] = []
        page_count = 1
        number = 1
        while number <= page_count:
            r = await client.get(path, params={"pageSize": 3, "pageNumber": number}, headers=headers)
            body = r.json()
            assert body["pageSize"] == 3 and body["pageNumber"] == number and body["total"] == len(expected)
            page_count = body["pageCount"]
            seen += [(e["id"], e["name"]) for e in body["entities"]]
            number += 1
        assert page_count == -(-len(expected) // 3)
        assert seen == expected
        past_the_end = (await client.get(path, params={"pageSize": 3, "pageNumber": 99}, headers=headers)).json()
        assert past_the_end["entities"] == []

    default = (await client.get(USERS_PATH, headers=headers)).json()
    assert default["pageSize"] == 25 and default["pageNumber"] == 1 and len(default["entities"]) == 25
    assert default["pageCount"] == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("params", [{"pageSize": "501"}, {"pageSize": "0"}, {"pageSize": "many"}, {"pageNumber": "0"}])
async def test_a_bad_page_request_is_a_400(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    r = await client.get(QUEUES_PATH, params=params, headers=await login(client))
    assert_genesys_error(r, 400, "bad.request")


# --- the rest ------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_anything_else_is_a_genesys_404(client: httpx.AsyncClient) -> None:
    assert_genesys_error(await client.get("/api/v2/analytics/agents/summary"), 404, "not.found")  # seed 004's
    assert_genesys_error(await client.get(AGGREGATES_PATH), 404, "not.found")


@pytest.mark.asyncio
async def test_requests_are_counted_per_path(client: httpx.AsyncClient, sim: GenesysSimulator) -> None:
    headers = await login(client)
    await client.get(QUEUES_PATH, headers=headers)
    await client.get(QUEUES_PATH, params={"pageNumber": 2}, headers=headers)
    await query(client, {"interval": INTERVAL, "metrics": ["tHandle"]}, headers)
    assert sim.requests == {TOKEN_PATH: 1, QUEUES_PATH: 2, AGGREGATES_PATH: 1}


@pytest.mark.asyncio
async def test_the_simulator_listens_on_loopback_until_stopped(workload: Workload, clock: FakeClock) -> None:
    sim = GenesysSimulator(workload, clock)
    with pytest.raises(RuntimeError):
        _ = sim.base_url
    url = await sim.start()
    assert url == sim.base_url and url.startswith("http://127.0.0.1:")
    await sim.stop()
    with pytest.raises(RuntimeError):
        _ = sim.base_url
