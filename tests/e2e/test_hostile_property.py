"""Any vendor reply, from the vendor's bytes to the scraper's bytes: the exporter never freezes or crashes.

For every provider, a hostile vendor answers its data and name endpoints (and sometimes its token endpoint)
with whatever hypothesis draws: any JSON (any unicode, lone surrogates and control characters included, any
number, any nesting), the vendor's own samples with parts replaced or removed, bodies nested 100,000 deep,
bodies past `max_response_size`, gzip bombs and broken gzip, raw binary, and any status. The hostile vendor
is a real loopback server in front of the provider's simulator (auth passes through to the simulator unless
drawn hostile too); a healthy source of another provider polls its own simulator beside it.

Always, after two polls: the healthy source is up and its poll counter grew; `/metrics` answers 200 in the
text, OpenMetrics and gzip forms, each parsing with prometheus_client's parsers, and the text form passes
`promtool check metrics`; `/` and `/-/ready` answer 200; no log record carries a traceback and no poll ended
in "internal error" (a bug, not a vendor fault).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from aht_exporter.clock import FakeClock
from aht_exporter.registry import build_config
from aht_exporter.scheduler import Exporter
from aht_exporter.server import start_server
from aht_exporter.simulator import serve_app
from aht_exporter.simulator.demo import DEMO_PROVIDERS, Demo
from tests.helpers import T0, RecordingSleep, fixture, mask_scrape_time_values, parse_exposition, samples
from tests.prometheus_bin import require

CAP = 64 * 1024  # the smallest max_response_size the config allows, so oversized bodies stay cheap

# The vendors' own samples, to be mutated: parsers reach their deeper checks only from nearly-valid input.
SAMPLES: dict[str, list[str]] = {
    "genesys": ["genesys_seed000_response.json", "genesys_aggregates_queue_media.json"],
    "koreai": ["koreai_seed003_response.json"],
    "liveperson": ["liveperson_seed002_totals_intervals.json", "liveperson_intervals_skills.json"],
    "ozonetel": ["ozonetel_aht_agent.json", "ozonetel_aht_campaign.json"],
    "amazon_connect": ["amazon_connect_metric_data_queue_channel.json", "amazon_connect_metric_data_agent.json"],
}
# Name endpoints' shapes (Genesys queues and users), mutated the same way.
NAME_SAMPLE = {"entities": [{"id": "q1", "name": "Sales"}], "pageCount": 1, "pageNumber": 1}


def sample(name: str) -> Any:
    """A vendor sample as its API sends it (Amazon Connect's fixtures wrap the reply with where it came from)."""
    body = fixture(name)
    return body["reply"] if isinstance(body, dict) and {"source", "reply"} <= body.keys() else body


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _keys(v)


KNOWN_KEYS = sorted({k for names in SAMPLES.values() for n in names for k in _keys(sample(n))} | {"entities", "id"})

# Any character at all, lone surrogates and control characters included.
ANY_CHAR = st.one_of(
    st.characters(exclude_categories=()),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.characters(max_codepoint=0x1F),
    st.sampled_from(['"', "\\", "\n", "{", "}", "\u2028", "\ufeff"]),
)
TEXT = st.text(ANY_CHAR, max_size=40)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1.7e308, -1.7e308, 2**63, 2**64, 1e-320, -0.0]),
)
LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON_VALUES = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KNOWN_KEYS), TEXT), children, max_size=4),
    ),
    max_leaves=30,
)


@st.composite
def mutated(draw: st.DrawFn, value: Any) -> Any:
    """`value` with some parts replaced by anything, some removed, and the rest kept."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            action = draw(st.sampled_from(["keep", "keep", "keep", "mutate", "replace", "drop"]))
            if action == "drop":
                continue
            out[k] = draw(JSON_VALUES) if action == "replace" else draw(mutated(v)) if action == "mutate" else v
        return out
    if isinstance(value, list):
        items = [draw(mutated(v)) for v in value[:6]]
        if len(items) > 0 and draw(st.booleans()):
            items = items * draw(st.integers(min_value=1, max_value=50))  # many of the same record
        return items
    return draw(st.one_of(st.just(value), LEAVES))


def _dumps(draw: st.DrawFn, value: Any) -> bytes:
    text = json.dumps(value, ensure_ascii=draw(st.booleans()), allow_nan=True)
    return text.encode("utf-8", "surrogatepass")  # lone surrogates as raw (invalid UTF-8) bytes too


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # a falsifying example prints this: the first bytes, not 200 KB of them
        return f"Reply({self.status}, {len(self.body)} bytes {self.body[:160]!r}, {self.headers})"


def _gzip_bomb() -> bytes:
    # 16 MiB of zeros, about 16 KiB compressed: far past CAP once inflated.
    return gzip.compress(b"\0" * (16 << 20), compresslevel=9)


GZIP_BOMB = _gzip_bomb()


@st.composite
def bodies(draw: st.DrawFn, provider: str) -> tuple[bytes, dict[str, str]]:
    kind = draw(st.sampled_from(["sample", "sample", "sample", "json", "deep", "oversized", "binary", "gzip"]))
    if kind == "sample":
        base = sample(draw(st.sampled_from(SAMPLES[provider])))
        return _dumps(draw, draw(mutated(draw(st.sampled_from([base, NAME_SAMPLE]))))), {}
    if kind == "json":
        return _dumps(draw, draw(JSON_VALUES)), {}
    if kind == "deep":
        depth = draw(st.sampled_from([999, 1001, 10_000, 100_000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"entities":[', "]}")]))
        return (opener * depth + "1" + closer * depth).encode(), {}
    if kind == "oversized":
        record = json.dumps({"id": "x" * 50, "name": "y" * 50}).encode()
        n = draw(st.integers(min_value=CAP // len(record) - 5, max_value=3 * CAP // len(record)))
        return b'{"entities":[' + b",".join([record] * n) + b"]}", {}
    if kind == "binary":
        return draw(st.binary(max_size=2000)), {}
    # gzip: a bomb, a valid gzip of a sample, or a broken one
    which = draw(st.sampled_from(["bomb", "valid", "broken"]))
    if which == "bomb":
        return GZIP_BOMB, {"Content-Encoding": "gzip"}
    compressed = gzip.compress(json.dumps(sample(SAMPLES[provider][0])).encode())
    if which == "broken":
        compressed = compressed[: len(compressed) // 2]
    return compressed, {"Content-Encoding": "gzip"}


@st.composite
def replies(draw: st.DrawFn, provider: str) -> Reply:
    status = draw(st.sampled_from([200, 200, 200, 200, 200, 204, 400, 401, 403, 404, 429, 500, 503]))
    body, headers = draw(bodies(provider))
    if status == 429 and draw(st.booleans()):
        headers = {**headers, "Retry-After": draw(st.sampled_from(["0", "1", "-5", "99999999999999", "soon", ""]))}
    return Reply(status, body, headers)


def _is_auth(path: str) -> bool:
    """Token and domain-lookup paths, which the hostile vendor passes to the simulator unless told otherwise."""
    return "token" in path.lower() or "/service/" in path


class HostileVendor:
    """A loopback server in front of a simulator: auth passes through, everything else is `replies`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.replies: list[Reply] = [Reply(200, b"{}")]
        self.hostile_auth = False
        self.served = 0
        self._client = httpx.AsyncClient(base_url=upstream)
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.url = await serve_app(app, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self._client.aclose()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if _is_auth(request.path) and not self.hostile_auth:
            upstream = await self._client.request(
                request.method,
                request.path_qs,
                content=await request.read(),
                headers={k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")},
            )
            return web.Response(status=upstream.status_code, body=upstream.content, content_type="application/json")
        reply = self.replies[self.served % len(self.replies)]
        self.served += 1
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)


@dataclass
class World:
    """Per provider: the simulators, and the hostile vendor in front of that provider's simulator."""

    loop: asyncio.Runner
    fleet: Demo
    hostile: dict[str, HostileVendor]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    loop = asyncio.Runner()
    fleet = Demo(FakeClock(T0))
    loop.run(fleet.start())
    hostile = {name: HostileVendor(sim.base_url) for name, sim in fleet.simulators.items()}
    for vendor in hostile.values():
        loop.run(vendor.start())
    yield World(loop, fleet, hostile)
    for vendor in hostile.values():
        loop.run(vendor.stop())
    loop.run(fleet.stop())
    loop.close()


def _pointed_at(source: dict[str, Any], old: str, new: str, name: str) -> dict[str, Any]:
    return {**{k: (new if v == old else v) for k, v in source.items()}, "name": name}


# Beside each hostile provider, a healthy source of another whose simulator has no per-minute budget that a
# fixed clock would never refill (Kore.ai's has: 60 requests, and its clock stands still here).
HEALTHY_BESIDE = {
    "genesys": "liveperson",
    "koreai": "genesys",
    "liveperson": "genesys",
    "ozonetel": "genesys",
    "amazon_connect": "genesys",
}


def _config(world: World, provider: str) -> tuple[list[dict[str, Any]], str, str]:
    sim = world.fleet.simulators[provider]
    hostile_source = _pointed_at(
        DEMO_PROVIDERS[provider].sources(sim.base_url)[0], sim.base_url, world.hostile[provider].url, "hostile"
    )
    hostile_source["max_response_size"] = f"{CAP // 1024}KiB"
    if provider == "koreai":  # its own pacing budget (60 a minute, real time) would make later examples wait
        hostile_source["rate_limit"] = 60_000
    if provider == "ozonetel":  # one agent and one campaign: each example costs two requests a poll, not eight
        hostile_source["agents"] = hostile_source["agents"][:1]
        hostile_source["campaigns"] = hostile_source["campaigns"][:1]
    healthy_provider = HEALTHY_BESIDE[provider]
    healthy = DEMO_PROVIDERS[healthy_provider].sources(world.fleet.simulators[healthy_provider].base_url)[0]
    return [hostile_source, {**healthy, "name": "healthy"}], "hostile", "healthy"


async def _run(world: World, provider: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    sources, hostile, healthy = _config(world, provider)
    raw = {"defaults": {"timeout": "2s"}, "sources": sources}
    exporter = Exporter(build_config(raw, "<hostile>", {}), clock=FakeClock(T0), sleep=RecordingSleep())
    runner, bound = await start_server(exporter, "127.0.0.1:0")
    try:
        for _ in range(2):
            await exporter.poll_all()
        await exporter.rendered_now()
        async with httpx.AsyncClient(base_url=f"http://{bound[0]}", timeout=10) as client:
            text = await client.get("/metrics")
            om = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
            gz = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})
            page = await client.get("/")
            ready = await client.get("/-/ready")
        errors = {r.name: r.health.last_error for r in exporter.runners}
    finally:
        await runner.cleanup()
        await exporter.aclose()
    return {
        "text": text,
        "openmetrics": om,
        "gzip": gz,
        "page": page,
        "ready": ready,
        "errors": errors,
        "hostile": hostile,
        "healthy": healthy,
    }


def _check(result: dict[str, Any], promtool: str, records: Callable[[], list[logging.LogRecord]]) -> None:
    for key in ("text", "openmetrics", "gzip", "page", "ready"):
        assert result[key].status_code == 200, (key, result[key].status_code, result[key].text[:300])
    series = parse_exposition(result["text"].text)
    healthy_up = samples(series, "aht_exporter_source_up", source=result["healthy"])
    assert list(healthy_up.values()) == [1.0], result["errors"]
    polls = samples(series, "aht_exporter_polls_total", source=result["healthy"], result="success")
    assert list(polls.values()) == [2.0], polls
    assert list(parse_openmetrics(result["openmetrics"].text))  # type: ignore[no-untyped-call]
    # httpx decoded the gzip body; the process and GC values are read anew at each scrape
    assert mask_scrape_time_values(result["gzip"].content) == mask_scrape_time_values(result["text"].content)
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=result["text"].content, capture_output=True, timeout=60
    )
    assert checked.returncode == 0, checked.stderr.decode(errors="replace")[:500]
    for name, error in result["errors"].items():
        assert not (error or "").startswith("internal error"), (name, error)
    tracebacks = [r.getMessage() for r in records() if r.exc_info is not None]
    assert not tracebacks, tracebacks


@pytest.mark.parametrize("provider", list(DEMO_PROVIDERS))
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # CI sees the same examples every run; a new failure is a new input, not luck
    # No shrinking: an example here costs two polls and four scrapes, and the failure is printed as drawn.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(data=st.data())
def test_any_vendor_reply_leaves_metrics_parseable_and_the_healthy_source_polling(
    world: World,
    provider: str,
    data: st.DataObject,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    promtool = require("promtool")
    monkeypatch.setattr("aht_exporter.scheduler.poll_deadline", lambda config: 5.0)
    # Ozonetel pauses its account a minute after "slow down", on the loop's real clock: a hostile 429 would make
    # every later example wait out its poll deadline. The pause still happens, for a twentieth of a second.
    monkeypatch.setattr("aht_exporter.providers.ozonetel.PAUSE_SECONDS", 0.05)
    vendor = world.hostile[provider]
    vendor.replies = data.draw(st.lists(replies(provider), min_size=1, max_size=4), label="replies")
    vendor.hostile_auth = data.draw(st.sampled_from([False, False, False, True]), label="hostile_auth")
    vendor.served = 0
    caplog.clear()
    with caplog.at_level(logging.INFO):
        result = world.loop.run(_run(world, provider, monkeypatch))
    _check(result, promtool, lambda: caplog.records)
