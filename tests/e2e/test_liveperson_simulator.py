"""The LivePerson simulator, driven over loopback HTTP as the exporter's provider would drive it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio
from oauthlib import oauth1

from aht_exporter.clock import FakeClock
from aht_exporter.simulator.liveperson import DEMO_ACCOUNT, LivePersonSimulator, as_chat
from aht_exporter.simulator.workload import Workload, total_by_group
from aht_exporter.timebuckets import parse_iso

NOW = int(parse_iso("2026-01-01T08:07:00Z"))
EIGHT = NOW - 7 * 60
PATH = f"/operations/api/account/{DEMO_ACCOUNT}/engactivity"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def workload() -> Workload:
    return Workload(seed=5, queues=3, agents=6, contacts_per_slot=12.0)


@pytest_asyncio.fixture
async def sim(workload: Workload, clock: FakeClock) -> AsyncIterator[LivePersonSimulator]:
    simulator = LivePersonSimulator(workload, clock, max_concurrent=2)
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest_asyncio.fixture
async def client(sim: LivePersonSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.base_url) as c:
        yield c


async def bearer(client: httpx.AsyncClient) -> dict[str, str]:
    r = await client.post(
        f"/sentinel/api/account/{DEMO_ACCOUNT}/app/token",
        params={"v": "1.0", "grant_type": "client_credentials"},
        data={"client_id": "demo-client", "client_secret": "demo-secret"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["token_type"] == "Bearer"
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def engactivity(client: httpx.AsyncClient, query: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.get(f"{PATH}?{query}", headers=headers if headers is not None else await bearer(client))


@pytest.mark.asyncio
async def test_the_domain_api_points_both_services_here(sim: LivePersonSimulator, client: httpx.AsyncClient) -> None:
    for service in ("leDataReporting", "sentinel"):
        r = await client.get(sim.csds_path(service), params={"version": "1.0"})
        assert r.json() == {
            "service": service,
            "account": DEMO_ACCOUNT,
            "baseURI": sim.base_url.removeprefix("http://"),
        }
    assert (await client.get(sim.csds_path("msgHist"))).status_code == 404
    assert (await client.get("/api/account/999/service/sentinel/baseURI.json")).status_code == 404


@pytest.mark.asyncio
async def test_tokens_need_the_right_client(sim: LivePersonSimulator, client: httpx.AsyncClient) -> None:
    bad = await client.post(
        sim.token_path,
        params={"grant_type": "client_credentials"},
        data={"client_id": "demo-client", "client_secret": "x"},
    )
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    wrong = await client.post(sim.token_path, data={"client_id": "demo-client", "client_secret": "demo-secret"})
    assert wrong.status_code == 400
    assert sim.tokens_issued == 0


CLIENT = {"client_id": "demo-client", "client_secret": "demo-secret"}
GRANT = {"grant_type": "client_credentials"}


@pytest.mark.parametrize(
    ("path", "query", "form", "version"),
    [
        # [doc] API V2, the OAuth 2.0 client-credentials page's example: everything in the form body.
        (f"/sentinel/api/v2/account/{DEMO_ACCOUNT}/app/token", {}, {**CLIENT, **GRANT}, "2.0"),
        # [doc] API V2 as LivePerson's Functions client asks for it.
        (f"/sentinel/api/account/{DEMO_ACCOUNT}/app/token", {"v": "2.0"}, {**CLIENT, **GRANT}, "2.0"),
        # [doc] API V1 as the Connector API's "Get AppJWT" writes it, and as the OAuth 2.0 page does.
        (f"/sentinel/api/account/{DEMO_ACCOUNT}/app/token", {"v": "1.0", **GRANT}, CLIENT, "1.0"),
        (f"/sentinel/api/account/{DEMO_ACCOUNT}/app/token", {"v": "1.0"}, {**CLIENT, **GRANT}, "1.0"),
    ],
)
@pytest.mark.asyncio
async def test_sentinel_issues_tokens_on_every_documented_request(
    sim: LivePersonSimulator,
    client: httpx.AsyncClient,
    path: str,
    query: dict[str, str],
    form: dict[str, str],
    version: str,
) -> None:
    r = await client.post(path, params=query, data=form)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"access_token", "token_type", "expires_in"}
    assert r.json()["token_type"] == "Bearer" and r.json()["expires_in"] == 3600
    assert sim.tokens_by_version == {version: 1}
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert (await engactivity(client, "timeframe=5&v=1", headers)).status_code == 200


@pytest.mark.parametrize("query", [{}, {"v": "3.0"}, {"v": "2"}])
@pytest.mark.asyncio
async def test_the_unversioned_token_path_needs_a_known_version(
    sim: LivePersonSimulator, client: httpx.AsyncClient, query: dict[str, str]
) -> None:
    r = await client.post(f"/sentinel/api/account/{DEMO_ACCOUNT}/app/token", params=query, data={**CLIENT, **GRANT})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert sim.tokens_issued == 0


@pytest.mark.parametrize(("accepted", "refused"), [(("1.0",), "2.0"), (("2.0",), "1.0")])
@pytest.mark.asyncio
async def test_engactivity_refuses_tokens_of_a_sentinel_version_it_does_not_accept(
    workload: Workload, clock: FakeClock, accepted: tuple[str, ...], refused: str
) -> None:
    """Sentinel issues both versions; engactivity, on such a tenant, takes only one."""
    sim = LivePersonSimulator(workload, clock, accepted_token_versions=accepted)
    await sim.start()
    try:
        async with httpx.AsyncClient(base_url=sim.base_url) as c:
            tokens = {}
            for version in ("1.0", "2.0"):
                r = await c.post(sim.token_path_for("v1"), params={"v": version}, data={**CLIENT, **GRANT})
                tokens[version] = {"Authorization": f"Bearer {r.json()['access_token']}"}
            no = await engactivity(c, "timeframe=5&v=1", tokens[refused])
            assert no.status_code == 401
            assert no.json() == {
                "message": f"Unauthorized: this API does not accept tokens of sentinel API {refused}",
                "status": 401,
            }
            assert (await engactivity(c, "timeframe=5&v=1", tokens[accepted[0]])).status_code == 200
        assert sim.tokens_by_version == {"1.0": 1, "2.0": 1}
        assert sim.refused_tokens == 1
    finally:
        await sim.stop()


def test_only_sentinel_versions_can_be_accepted(workload: Workload, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="sentinel API versions"):
        LivePersonSimulator(workload, clock, accepted_token_versions=("v2",))


@pytest.mark.asyncio
async def test_engactivity_needs_credentials(sim: LivePersonSimulator, client: httpx.AsyncClient) -> None:
    assert (await engactivity(client, "timeframe=60&v=1", headers={})).status_code == 401
    assert (await engactivity(client, "timeframe=60&v=1", headers={"Authorization": "Bearer nope"})).status_code == 401
    headers = await bearer(client)
    sim.expire_tokens()
    assert (await engactivity(client, "timeframe=60&v=1", headers=headers)).status_code == 401


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("timeframe=60&v=1&interval=61", "divisor"),
        ("timeframe=60&v=1&interval=31", "divisor"),
        ("timeframe=60&v=1&interval=3", "at least 5"),
        ("timeframe=1441&v=1&interval=1", "between 1 and 1440"),
        ("timeframe=1445&v=1&interval=5", "between 1 and 1440"),
        ("timeframe=60", "v is required"),
        ("v=1", "timeframe is required"),
        ("timeframe=abc&v=1", "numeric"),
    ],
)
@pytest.mark.asyncio
async def test_bad_timeframes_and_intervals_are_400s(client: httpx.AsyncClient, query: str, message: str) -> None:
    r = await engactivity(client, query)
    assert r.status_code == 400
    assert message in r.json()["message"]


@pytest.mark.asyncio
async def test_the_docs_example_of_interval_rounding(client: httpx.AsyncClient) -> None:
    """[doc] Now 8:07, timeframe=20&interval=10: intervals 8:00-8:10 (still filling), 7:50-8:00, 7:45-7:50."""
    body = (await engactivity(client, "timeframe=20&v=1&interval=10")).json()
    stamps = [i["timestamp"] // 1000 for i in body["metricsByIntervals"]]
    assert stamps == [EIGHT + 600, EIGHT, EIGHT - 600]
    assert set(body) == {"metricsByIntervals", "metricsTotals"}


@pytest.mark.asyncio
async def test_every_response_shape(client: httpx.AsyncClient) -> None:
    totals = (await engactivity(client, "timeframe=60&v=1")).json()
    assert set(totals) == {"metricsTotals"}
    assert list(totals["metricsTotals"]) == [
        "totalInteractiveChats",
        "totalNonInteractiveChats",
        "totalHandlingTime",
        "nonInteractiveTotalHandlingTime",
        "connectedEngagements",
    ]
    skills = (await engactivity(client, "timeframe=60&v=1&skillIds=all")).json()
    assert set(skills) == {"skillsMetricsPerAgent"}
    assert set(skills["skillsMetricsPerAgent"]) == {"metricsPerSkill", "metricsTotals"}
    a_skill = next(iter(skills["skillsMetricsPerAgent"]["metricsPerSkill"].values()))
    assert set(a_skill) == {"metricsPerAgent", "metricsTotals"}
    agents = (await engactivity(client, "timeframe=60&v=1&agentIds=all&interval=30")).json()
    assert set(agents) == {"metricsByIntervals", "agentsMetrics"}
    assert set(agents["metricsByIntervals"][0]["metricsData"]) == {"agentsMetrics"}
    both = (await engactivity(client, "timeframe=60&v=1&agentIds=all&skillIds=all")).json()
    assert set(both) == {"skillsMetricsPerAgent", "agentsMetrics"}
    none = (await engactivity(client, "timeframe=60&v=1&skillIds=no-such-skill&interval=60")).json()
    assert none["skillsMetricsPerAgent"]["metricsPerSkill"] == {}
    assert none["skillsMetricsPerAgent"]["metricsTotals"]["totalInteractiveChats"] == 0
    assert none["metricsByIntervals"][0]["metricsData"]["skillsMetricsPerAgent"]["metricsPerSkill"] == {}


@pytest.mark.asyncio
async def test_5_minute_intervals_hold_the_ground_truth_and_add_up_to_the_whole(
    sim: LivePersonSimulator, workload: Workload, client: httpx.AsyncClient
) -> None:
    body = (await engactivity(client, "timeframe=120&v=1&interval=5&skillIds=all")).json()
    intervals = body["metricsByIntervals"]
    assert intervals[0]["timestamp"] // 1000 == EIGHT + 600  # newest first, rounded up past now: 08:10
    assert intervals[-1]["timestamp"] // 1000 == EIGHT - 7200 + 600  # the bucket holding 06:07 ends 06:10
    assert len(intervals) == 25
    whole: dict[tuple[str, str], list[int]] = {}
    for interval in intervals:
        end = interval["timestamp"] // 1000
        truth = sim.truth(end - 300, end, ["queue", "agent"])
        cells = {
            (("agent", agent), ("media_type", "chat"), ("queue", skill)): metrics
            for skill, entry in interval["metricsData"]["skillsMetricsPerAgent"]["metricsPerSkill"].items()
            for agent, metrics in entry["metricsPerAgent"].items()
        }
        assert cells.keys() == truth.keys()
        for key, metrics in cells.items():
            assert metrics["totalInteractiveChats"] == truth[key].contacts_handled
            assert metrics["totalHandlingTime"] == truth[key].handle_seconds
            acc = whole.setdefault((key[2][1], key[0][1]), [0, 0])
            acc[0] += metrics["totalInteractiveChats"]
            acc[1] += metrics["totalHandlingTime"]
    per_skill = body["skillsMetricsPerAgent"]["metricsPerSkill"]
    assert {
        (s, a): [m["totalInteractiveChats"], m["totalHandlingTime"]]
        for s, e in per_skill.items()
        for a, m in e["metricsPerAgent"].items()
    } == whole
    assert sum(v[0] for v in whole.values()) > 20


@pytest.mark.asyncio
async def test_the_newest_interval_is_still_filling(
    sim: LivePersonSimulator, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    clock.set(EIGHT + 300)  # 08:05:00: the interval 08:05-08:10 has just begun
    first = (await engactivity(client, "timeframe=10&v=1&interval=5")).json()["metricsByIntervals"][0]
    clock.set(EIGHT + 590)  # 08:09:50: chats have closed in it since
    later = (await engactivity(client, "timeframe=10&v=1&interval=5")).json()["metricsByIntervals"][0]
    assert first["timestamp"] == later["timestamp"] == (EIGHT + 600) * 1000
    counts = [i["metricsData"]["metricsTotals"]["totalInteractiveChats"] for i in (first, later)]
    assert counts[0] == 0 < counts[1]
    assert counts[1] == sum(t.contacts_handled for t in sim.truth(EIGHT + 300, EIGHT + 600, []).values())


@pytest.mark.asyncio
async def test_chats_are_the_workloads_chat_and_message_contacts_in_whole_seconds(
    sim: LivePersonSimulator, workload: Workload
) -> None:
    contacts = [c for c in workload.contacts(EIGHT - 3600, EIGHT, NOW) if c.media_type in ("chat", "message")]
    truth = sim.truth(EIGHT - 3600, EIGHT, ["queue"])
    assert truth == total_by_group([as_chat(c) for c in contacts], ["queue", "media_type"])
    assert all(t.handle_seconds == int(t.handle_seconds) for t in truth.values())
    assert all(dict(k)["media_type"] == "chat" for k in truth)


@pytest.mark.asyncio
async def test_too_many_concurrent_requests_get_429(sim: LivePersonSimulator, client: httpx.AsyncClient) -> None:
    headers = await bearer(client)
    sim.pause()
    held = [asyncio.create_task(engactivity(client, "timeframe=5&v=1", headers)) for _ in range(2)]
    await until(lambda: sim.in_flight == 2)
    over = await engactivity(client, "timeframe=5&v=1", headers)
    assert over.status_code == 429
    assert sim.rate_limited == 1
    sim.resume()
    assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
    assert (await engactivity(client, "timeframe=5&v=1", headers)).status_code == 200


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run (no wall-clock wait) until `condition` holds."""
    for _ in range(100_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def oauth1_client(**overrides: Any) -> oauth1.Client:
    keys: dict[str, Any] = {
        "client_key": "demo-consumer-key",
        "client_secret": "demo-consumer-secret",
        "resource_owner_key": "demo-token",
        "resource_owner_secret": "demo-token-secret",
    }
    keys.update(overrides)
    return oauth1.Client(**keys)


@pytest.mark.asyncio
async def test_oauth1_signed_requests_are_verified(sim: LivePersonSimulator, client: httpx.AsyncClient) -> None:
    url = f"{sim.base_url}{PATH}?timeframe=30&v=1&interval=5&skillIds=all"
    _, headers, _ = oauth1_client().sign(url)
    ok = await client.get(url, headers=headers)
    assert ok.status_code == 200, ok.text
    replay = await client.get(url, headers=headers)
    assert replay.status_code == 401  # the same nonce twice
    _, headers, _ = oauth1_client(client_secret="wrong").sign(url)
    assert (await client.get(url, headers=headers)).status_code == 401
    _, headers, _ = oauth1_client().sign(url)
    tampered = await client.get(url.replace("timeframe=30", "timeframe=60"), headers=headers)
    assert tampered.status_code == 401  # the query is part of the signature


@pytest.mark.asyncio
async def test_oauth1_can_be_switched_off(workload: Workload, clock: FakeClock) -> None:
    sim = LivePersonSimulator(workload, clock, consumer_key=None)
    await sim.start()
    try:
        url = f"{sim.base_url}{PATH}?timeframe=30&v=1"
        _, headers, _ = oauth1_client().sign(url)
        async with httpx.AsyncClient() as c:
            assert (await c.get(url, headers=headers)).status_code == 401
    finally:
        await sim.stop()


@pytest.mark.asyncio
async def test_skill_and_agent_ids_are_longs(sim: LivePersonSimulator, client: httpx.AsyncClient) -> None:
    body = (await engactivity(client, "timeframe=120&v=1&skillIds=all")).json()
    per_skill = body["skillsMetricsPerAgent"]["metricsPerSkill"]
    assert "-1" in per_skill  # [unverified] chats without a skill, under "-1": the page never shows it
    assert set(per_skill) - {"-1"} <= {skill for skill, _ in sim.skills}
    agents = {a for entry in per_skill.values() for a in entry["metricsPerAgent"]}
    assert agents and agents <= {agent for agent, _ in sim.agents}
    assert all(i.isdigit() for i in (*(set(per_skill) - {"-1"}), *agents))
    one = next(s for s in per_skill if s != "-1")
    only = (await engactivity(client, f"timeframe=120&v=1&skillIds={one}")).json()
    assert set(only["skillsMetricsPerAgent"]["metricsPerSkill"]) == {one}
