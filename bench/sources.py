"""The benchmarked source of each provider: its simulator, its config, and the fewest API requests a
poll can make (the minimum the vendor's API allows, with its formula).

A provider whose modules have not landed yet is "not available": the benchmarks say so instead of failing.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aht_exporter.clock import Clock
from aht_exporter.providers import PROVIDERS
from aht_exporter.scheduler import SourceRunner
from aht_exporter.simulator.workload import Workload

CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-secret"  # the simulator's own, not a secret
AGENT_SOURCE = {"group_by": ["agent"], "windows": ["30m", "1h"], "max_series": 1_000_000}


class Simulator(Protocol):
    requests: Any  # Counter of requests by path

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class PollPlan:
    """What one poll has to fetch, known before it runs."""

    start: int
    end: int
    first: bool  # the process's first poll: no token cached, names due
    names_due: bool


@dataclass(frozen=True)
class BenchSource:
    provider: str
    modules: tuple[str, ...]
    # (workload, clock) -> (simulator, base_url, raw source config)
    start: Callable[[Workload, Clock], Awaitable[tuple[Simulator, str, dict[str, Any]]]]
    # (plan, runner, agents, queues) -> the fewest requests the API allows, by what they are for
    minimum: Callable[[PollPlan, SourceRunner, int, int], Awaitable[dict[str, int]]]
    formula: str
    paths: dict[str, str]  # endings of the simulator's request paths -> the names `minimum` uses

    def name_of(self, path: str) -> str:
        return next((name for end, name in self.paths.items() if path.endswith(end)), path)

    @property
    def available(self) -> bool:
        return self.provider in PROVIDERS and all(importlib.util.find_spec(m) is not None for m in self.modules)


def plan_poll(runner: SourceRunner, now: float) -> PollPlan:
    """The span the runner's next poll fetches, as its store tells `SourceRunner._update`."""
    span = runner.store.span(now)
    start, end = span.start, span.end
    first = not runner.health.polled
    return PollPlan(start, end, first, names_due=first)


# --- Genesys ---------------------------------------------------------------------------------------------


async def _start_genesys(workload: Workload, clock: Clock) -> tuple[Simulator, str, dict[str, Any]]:
    from aht_exporter.simulator.genesys import GenesysSimulator

    sim = GenesysSimulator(workload, clock, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    url = await sim.start("127.0.0.1", 0)
    source = {
        "name": "bench-genesys",
        "provider": "genesys",
        "base_url": url,
        "login_url": url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "bucket": "30m",
        **AGENT_SOURCE,
    }
    return sim, url, source


async def _genesys_minimum(plan: PollPlan, runner: SourceRunner, agents: int, queues: int) -> dict[str, int]:
    provider: Any = runner.provider
    span = provider.config.max_query_span.seconds
    group_by = provider.config.group_by
    out = {"aggregates": math.ceil((plan.end - plan.start) / span)}
    if plan.first:
        out["token"] = 1
    if plan.names_due:
        if "queue" in group_by:
            out["queues"] = math.ceil(queues / 100)
        if "agent" in group_by:
            out["users"] = math.ceil(agents / 100)
    return out


GENESYS = BenchSource(
    provider="genesys",
    modules=("aht_exporter.providers.genesys", "aht_exporter.simulator.genesys"),
    start=_start_genesys,
    minimum=_genesys_minimum,
    formula=(
        "ceil(fetched span / max_query_span) aggregates queries, + 1 token when none is cached (first poll, "
        "then every 24 h), + ceil(users / 100) user pages when names are due (first poll, then hourly)"
    ),
    paths={
        "/oauth/token": "token",
        "/api/v2/analytics/conversations/aggregates/query": "aggregates",
        "/api/v2/routing/queues": "queues",
        "/api/v2/users": "users",
    },
)


# --- LivePerson ------------------------------------------------------------------------------------------


async def _start_liveperson(workload: Workload, clock: Clock) -> tuple[Simulator, str, dict[str, Any]]:
    from aht_exporter.simulator.liveperson import LivePersonSimulator, demo_source

    sim = LivePersonSimulator(workload, clock)
    url = await sim.start("127.0.0.1", 0)
    return sim, url, {**demo_source(url), "name": "bench-liveperson", **AGENT_SOURCE}


async def _liveperson_minimum(plan: PollPlan, runner: SourceRunner, agents: int, queues: int) -> dict[str, int]:
    # base_url and sentinel_url are configured, so no domain lookup is due.
    return {"engactivity": 1, **({"token": 1} if plan.first else {})}


LIVEPERSON = BenchSource(
    provider="liveperson",
    modules=("aht_exporter.providers.liveperson", "aht_exporter.simulator.liveperson"),
    start=_start_liveperson,
    minimum=_liveperson_minimum,
    formula=(
        "1 engactivity request (one timeframe of at most 1440 minutes covers the fetched span), + 1 sentinel "
        "token when none is valid (first poll, then hourly), + 1 domain lookup per service when its domain is "
        "not configured (daily)"
    ),
    paths={"/engactivity": "engactivity", "/app/token": "token", "/baseURI.json": "domain"},
)


# --- Ozonetel --------------------------------------------------------------------------------------------

# What one poll serves at Ozonetel's documented 50 requests a minute (every 5m, one slot kept for a token).
OZONETEL_TARGETS_PER_POLL = 233
OZONETEL_BENCH_RATE = 6000  # per minute, loopback only: the poll's CPU without its minutes of pacing


async def _start_ozonetel(workload: Workload, clock: Clock) -> tuple[Simulator, str, dict[str, Any]]:
    from aht_exporter.simulator.ozonetel import DEMO_API_KEY, DEMO_USER_NAME, OzonetelSimulator, agent_id, demo_source

    sim = OzonetelSimulator(
        workload, clock, user_name=DEMO_USER_NAME, api_key=DEMO_API_KEY, rate_limit=OZONETEL_BENCH_RATE
    )
    url = await sim.start("127.0.0.1", 0)
    agents = [agent_id(i) for i in range(min(len(workload.agents), OZONETEL_TARGETS_PER_POLL))]
    source = {
        **demo_source(url),
        "name": "bench-ozonetel",
        "agents": agents,
        "campaigns": [],
        "rate_limit": OZONETEL_BENCH_RATE,
        "max_series": 1_000_000,
    }
    return sim, url, source


async def _ozonetel_minimum(plan: PollPlan, runner: SourceRunner, agents: int, queues: int) -> dict[str, int]:
    from aht_exporter.providers.ozonetel import requests_per_poll, targets_of

    cfg: Any = runner.config
    served = min(len(targets_of(cfg)), requests_per_poll(cfg))
    return {"aht": served, **({"token": 1} if plan.first else {})}


OZONETEL = BenchSource(
    provider="ozonetel",
    modules=("aht_exporter.providers.ozonetel", "aht_exporter.simulator.ozonetel"),
    start=_start_ozonetel,
    minimum=_ozonetel_minimum,
    formula=(
        "1 AHT request per target served, min(targets, what rate_limit allows in `every`), + 1 token when "
        f"none is valid (first poll, then every 55 min). At the documented 50/min a poll serves "
        f"{OZONETEL_TARGETS_PER_POLL} targets: 20,000 agents are each refreshed every 86 polls (7 h 10 min)"
    ),
    paths={"/ca_apis/aht": "aht", "/ca_apis/CAToken/generateToken": "token"},
)


# --- Kore.ai ---------------------------------------------------------------------------------------------


async def _start_koreai(workload: Workload, clock: Clock) -> tuple[Simulator, str, dict[str, Any]]:
    from aht_exporter.simulator.koreai import KoreAISimulator, demo_source

    # The simulator's per-minute limit counts on the shared clock, which jumps 5 minutes between polls.
    sim = KoreAISimulator(workload, clock)
    url = await sim.start("127.0.0.1", 0)
    source = {**demo_source(url), "name": "bench-koreai", "windows": ["30m", "1h"], "max_series": 1_000_000}
    return sim, url, source


async def _koreai_minimum(plan: PollPlan, runner: SourceRunner, agents: int, queues: int) -> dict[str, int]:
    """ceil(records / largest page): the record count asked of the API itself, after the poll was counted."""
    from aht_exporter.httpclient import json_body
    from aht_exporter.providers.koreai import MAX_PAGE_SIZE, parse_page, query_body

    cfg: Any = runner.config
    response = await runner.provider.client.request(
        "POST", cfg.callvolume_url, endpoint="callvolume", json=query_body(cfg, plan.start, plan.end, 0)
    )
    total = parse_page(json_body(response, "callvolume")).total or 0
    return {"callvolume": max(1, math.ceil(total / MAX_PAGE_SIZE))}


KOREAI = BenchSource(
    provider="koreai",
    modules=("aht_exporter.providers.koreai", "aht_exporter.simulator.koreai"),
    start=_start_koreai,
    minimum=_koreai_minimum,
    formula=(
        "ceil(records in the fetched span / 100) callvolume pages, at least 1 (100: the largest page "
        "docs/providers/koreai.md settles on); the JWT is minted locally, so no token request. Records are per "
        "interval x queue x channel, whatever the number of agents"
    ),
    paths={"/callvolume": "callvolume"},
)

SOURCES: dict[str, BenchSource] = {s.provider: s for s in (GENESYS, LIVEPERSON, OZONETEL, KOREAI)}
ALL_PROVIDERS = ("genesys", "liveperson", "ozonetel", "koreai")
