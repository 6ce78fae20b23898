"""`--probe`: one bounded poll per source, a report an operator can act on, exit 0 only when all look sane.

Run against every simulator over real loopback HTTP; the vendor's refusals and implausible figures are made
by a transport between the probe and the simulators that rewrites what the vendor says, as a real tenant might.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from aht_exporter.clock import Clock, SystemClock
from aht_exporter.config import Config
from aht_exporter.probe import run_probe
from aht_exporter.registry import build_config
from aht_exporter.simulator.demo import DEMO_PROVIDERS, Demo, DemoProvider
from aht_exporter.simulator.koreai import KoreAISimulator
from aht_exporter.simulator.workload import Workload
from tests.e2e.test_cli import run


@pytest_asyncio.fixture
async def fleet() -> AsyncIterator[Demo]:
    # The simulators' clock is the wall's, as a vendor's is: the probe compares it with their `Date` headers.
    demo = Demo(SystemClock())
    await demo.start()
    yield demo
    await demo.stop()


def config_of(fleet: Demo, *, only: str | None = None, **changes: Any) -> Config:
    sources = [{**s, **changes} if only is None or s["provider"] == only else s for s in fleet.sources]
    if only is not None:
        sources = [s for s in sources if s["provider"] == only]
    return build_config({"sources": sources}, "<probe>", {})


class Rewriting(httpx.AsyncBaseTransport):
    """The real transport; `rewrite(request, response)` may replace what the vendor said. It also keeps every
    token the vendors issued, read from their replies independently of the probe."""

    def __init__(self, rewrite: Rewrite | None = None):
        self._inner = httpx.AsyncHTTPTransport()
        self._rewrite = rewrite
        self.tokens: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        body = await response.aread()
        await response.aclose()
        if "token" in request.url.path.lower() and response.status_code == 200:
            reply = json.loads(body)
            self.tokens += [v for k, v in reply.items() if k in ("access_token", "token") and isinstance(v, str)]
        fresh = httpx.Response(response.status_code, headers=response.headers, content=body, request=request)
        if self._rewrite is not None:
            replaced = self._rewrite(request, fresh)
            if replaced is not None:
                return replaced
        return fresh

    async def aclose(self) -> None:
        await self._inner.aclose()


Rewrite = Callable[[httpx.Request, httpx.Response], httpx.Response | None]


def json_rewrite(path_suffix: str, change: Callable[[Any], None]) -> Rewrite:
    """A rewrite that applies `change` to the JSON of every 200 reply whose path ends with `path_suffix`."""

    def rewrite(request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
        if not request.url.path.endswith(path_suffix):
            return None
        data = response.json()
        change(data)
        return httpx.Response(200, json=data)

    return rewrite


def genesys_intervals(data: Any) -> Iterator[dict[str, Any]]:
    for result in data.get("results", []):
        yield from result["data"]


def genesys_handle_stats(data: Any) -> Iterator[dict[str, Any]]:
    for interval in genesys_intervals(data):
        yield from (m["stats"] for m in interval["metrics"] if m["metric"] == "tHandle")


async def probe(config: Config, transport: Rewriting | None = None, record: Path | None = None) -> tuple[int, str]:
    out = io.StringIO()
    rc = await run_probe(config, out, inner=(lambda: transport) if transport else None, record=record)
    return rc, out.getvalue()


def block(report: str, source: str) -> str:
    (text,) = [b for b in report.split("\n\n") if b.startswith(f"source {source} ")]
    return text


@pytest.mark.asyncio
async def test_every_simulator_looks_sane_and_the_probe_exits_0(fleet: Demo) -> None:
    rc, report = await probe(config_of(fleet))
    assert rc == 0, report
    for source in fleet.sources:
        text = block(report, source["name"])
        assert "auth: ok" in text
        assert "request: " in text and " -> 200 in " in text
        assert "would export: 0 data series" not in text
        assert "aht_seconds{" in text
        assert text.endswith("verdict: looks sane")
    assert report.rstrip().endswith(f"probe: {len(fleet.sources)} of {len(fleet.sources)} sources look sane")


@pytest.mark.asyncio
async def test_a_reply_shape_is_shown_with_counts_and_a_sample(fleet: Demo) -> None:
    _, report = await probe(config_of(fleet, only="genesys"))
    text = block(report, "demo-genesys")
    assert "request: POST /api/v2/analytics/conversations/aggregates/query -> 200" in text
    assert "top-level keys: results" in text
    assert "records: results: " in text
    assert "sample of results" in text
    assert "token reply (not shown)" in text


@pytest.mark.asyncio
async def test_record_writes_replies_and_no_secret_in_any_form(fleet: Demo, tmp_path: Path) -> None:
    config = config_of(fleet)
    transport = Rewriting()
    rc, _ = await probe(config, transport, record=tmp_path)
    assert rc == 0
    secrets = [fleet_secret for fleet_secret in _config_secrets(config)] + transport.tokens
    assert transport.tokens, "the vendors issued tokens, and the test saw them"
    forms = set()
    for s in secrets:
        forms |= {s, urllib.parse.quote(s, safe=""), urllib.parse.quote_plus(s), json.dumps(s)[1:-1]}
        forms.add(s[:16]) if len(s) >= 24 else None
    ids = [getattr(src, "client_id", None) for src in config.sources]
    for cid in filter(None, ids):
        for s in _config_secrets(config):
            forms.add(base64.b64encode(f"{cid}:{s}".encode()).decode())
    _check_recorded(tmp_path, config, forms)


def _check_recorded(directory: Path, config: Config, forms: set[str]) -> None:
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    assert {p.parent.name for p in files} == {s.name for s in config.sources}
    assert any(p.suffix == ".json" and not p.name.endswith(".meta.json") for p in files)
    for path in files:
        text = path.read_text(encoding="utf-8")
        for form in forms:
            assert form not in text, f"{path.name} holds a secret"
    # What was recorded is the vendor's reply, ready to become a fixture: it parses, and has the data.
    (aggregates,) = [p for p in files if "aggregates-query.json" in p.name and p.parent.name == "demo-genesys"]
    assert json.loads(aggregates.read_text())["results"]


def _config_secrets(config: Config) -> list[str]:
    out = []
    for source in config.sources:
        for name in type(source).model_fields:
            value = getattr(source, name)
            if hasattr(value, "get_secret_value"):
                out.append(value.get_secret_value())
    return out


@pytest.mark.asyncio
async def test_a_refused_credential_is_reported_and_the_probe_exits_1(fleet: Demo) -> None:
    def refuse(request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
        if request.url.path == "/oauth/token":
            return httpx.Response(401, json={"error": "invalid_client", "description": "client not found"})
        return None

    rc, report = await probe(config_of(fleet, only="genesys"), Rewriting(refuse))
    assert rc == 1
    text = block(report, "demo-genesys")
    assert "auth: REFUSED (POST /oauth/token 401)" in text
    assert "warning: the vendor refused our credentials" in text
    assert text.endswith("verdict: NEEDS A LOOK")
    assert "look at demo-genesys, demo-genesys-agents" in report


@pytest.mark.asyncio
async def test_liveperson_refusing_the_oauth2_token_says_what_to_try(fleet: Demo) -> None:
    def refuse(request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
        if request.url.path.endswith("/engactivity"):
            return httpx.Response(401, json={"error": "unauthorized"})
        return None

    rc, report = await probe(config_of(fleet, only="liveperson"), Rewriting(refuse))
    assert rc == 1
    text = block(report, "demo-liveperson")
    assert "engactivity refused it" in text
    assert "auth: oauth1" in text


@pytest.mark.asyncio
async def test_koreai_in_the_wrong_time_unit_warns_of_an_aht_above_4_hours(fleet: Demo) -> None:
    rc, report = await probe(config_of(fleet, only="koreai", time_unit="s"))
    assert rc == 1
    text = block(report, "demo-koreai")
    assert "is above 4 hours" in text and "`time_unit` is likely wrong" in text


@pytest.mark.asyncio
async def test_genesys_handle_time_below_its_parts_is_a_warning(fleet: Demo) -> None:
    def shrink(data: Any) -> None:
        for stats in genesys_handle_stats(data):
            if "sum" in stats:  # no sum when count is 0
                stats["sum"] //= 2

    rc, report = await probe(config_of(fleet, only="genesys"), Rewriting(json_rewrite("/aggregates/query", shrink)))
    assert rc == 1
    assert "is not at least talk_time + hold_time + acw_time" in block(report, "demo-genesys")


@pytest.mark.asyncio
async def test_genesys_handle_time_above_its_parts_is_outbound_dialing_not_a_warning(fleet: Demo) -> None:
    def grow(data: Any) -> None:
        for stats in genesys_handle_stats(data):
            stats["sum"] = stats.get("sum", 0) + 20_000 * stats["count"]

    rc, report = await probe(config_of(fleet, only="genesys"), Rewriting(json_rewrite("/aggregates/query", grow)))
    assert rc == 0, report


@pytest.mark.asyncio
async def test_koreai_handle_time_unequal_to_its_parts_is_a_warning(fleet: Demo) -> None:
    def grow(data: Any) -> None:
        for record in data.get("CallVolumeUpdate", []):
            record["conversationHandleTime"] = record.get("conversationHandleTime", 0) + 60_000

    rc, report = await probe(config_of(fleet, only="koreai"), Rewriting(json_rewrite("/callvolume", grow)))
    assert rc == 1
    assert "is not equal to talk_time + hold_time + acw_time" in block(report, "demo-koreai")


@pytest.mark.asyncio
async def test_a_vendor_clock_far_from_ours_is_a_warning(fleet: Demo) -> None:
    def skew(request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("date", "content-length")}
        headers["Date"] = "Mon, 02 Mar 2026 10:00:00 GMT"
        return httpx.Response(response.status_code, headers=headers, content=response.content)

    rc, report = await probe(config_of(fleet, only="koreai"), Rewriting(skew))
    assert rc == 1
    assert "ahead of the vendor's (its `Date` header)" in block(report, "demo-koreai")


@pytest.mark.asyncio
async def test_buckets_dated_in_the_future_are_a_warning(fleet: Demo) -> None:
    def shift(data: Any) -> None:
        for record in data.get("CallVolumeUpdate", []):
            for key in ("intervalStartTimeStamp", "intervalEndTimeStamp"):
                record[key] = _days_later(record[key], 3)

    rc, report = await probe(config_of(fleet, only="koreai"), Rewriting(json_rewrite("/callvolume", shift)))
    assert rc == 1
    text = block(report, "demo-koreai")
    # Kore.ai's provider keeps only the records of the span it asked for; either way the operator is told.
    assert "end in the future" in text or "records dated outside the span" in text


@pytest.mark.asyncio
async def test_genesys_buckets_dated_in_the_future_are_a_warning(fleet: Demo) -> None:
    def shift(data: Any) -> None:
        for interval in genesys_intervals(data):
            start, end = interval["interval"].split("/")
            interval["interval"] = f"{_days_later(start, 3)}/{_days_later(end, 3)}"

    rc, report = await probe(config_of(fleet, only="genesys"), Rewriting(json_rewrite("/aggregates/query", shift)))
    assert rc == 1
    text = block(report, "demo-genesys")
    assert "internal error" not in text
    assert "end in the future" in text or "is not one of the 30-minute buckets asked for" in text


def _days_later(value: Any, days: int) -> Any:
    if isinstance(value, int | float):
        return value + days * 86_400_000
    from datetime import datetime, timedelta

    moved = datetime.fromisoformat(str(value).replace("Z", "+00:00")) + timedelta(days=days)
    return moved.isoformat().replace("+00:00", "Z")


def test_the_cli_probes_the_demo_records_and_exits_0(tmp_path: Path) -> None:
    done = run("--demo", "--probe", f"--record={tmp_path}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    names = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("source ")]
    # Every demo source of every provider, in the demo's order (simulator/demo.py: one entry per provider).
    demo = [source["name"] for p in DEMO_PROVIDERS.values() for source in p.sources("http://127.0.0.1:1")]
    assert names == demo and "demo-genesys-agents" in names
    assert done.stdout.rstrip().endswith(f"probe: {len(demo)} of {len(demo)} sources look sane")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert "<redacted>" not in done.stderr, "no public name is masked in the logs"


def test_the_cli_refuses_record_without_probe() -> None:
    done = run("--demo", "--record=/tmp/x")
    assert done.returncode == 2
    assert done.stderr.strip() == "aht-exporter: --record needs --probe"


def test_the_cli_probe_exits_1_when_a_source_fails(tmp_path: Path) -> None:
    done = run("--demo", "--probe", "--demo.fault=koreai:503")
    assert done.returncode == 1
    assert "look at demo-koreai" in done.stdout
    assert "warning: the poll failed: data request to 127.0.0.1:" in done.stdout
    assert "POST /agentassist/api/public/analytics/account/" in done.stdout


@pytest.mark.asyncio
async def test_ozonetel_with_no_calls_on_any_target_is_a_warning_not_a_failure(fleet: Demo) -> None:
    # A quiet night: every agent and campaign answers Ozonetel's "No Data Found" (docs/providers/ozonetel.md).
    def quiet(request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
        if request.url.path == "/ca_apis/aht":
            return httpx.Response(200, json={"status": "error", "message": "No Data Found"})
        return None

    rc, report = await probe(config_of(fleet, only="ozonetel"), Rewriting(quiet))
    assert rc == 1
    text = block(report, "demo-ozonetel")
    assert "the poll failed" not in text
    assert "would export: 0 data series" in text
    assert "warning: no target had data in the last 2 hours" in text


@pytest.mark.asyncio
async def test_sparse_koreai_records_look_sane_and_are_recorded_as_sent(tmp_path: Path) -> None:
    # Contacts abandoned before a queue come as `queueId: null`, and zero counters are left out
    # (docs/providers/koreai.md, Real-tenant cases): the probe reports them as data, not as a problem.
    def sparse_kore(workload: Workload, clock: Clock) -> KoreAISimulator:
        return KoreAISimulator(workload, clock, before_queue_ms=60_000)

    demo = Demo(SystemClock(), providers={"koreai": DemoProvider(sparse_kore, DEMO_PROVIDERS["koreai"].sources)})
    await demo.start()
    try:
        rc, report = await probe(config_of(demo), Rewriting(), record=tmp_path)
    finally:
        await demo.stop()
    assert rc == 0, report
    assert "verdict: looks sane" in block(report, "demo-koreai")
    records = _recorded_records(tmp_path / "demo-koreai")
    assert any(r.get("queueId") is None for r in records), "the simulator sent queue-less records"
    assert any("abandonedContacts" not in r for r in records), "and records without their zero counters"


def _recorded_records(folder: Path) -> list[dict[str, Any]]:
    """Every record of every callvolume page recorded (one page or two, as the wall clock falls)."""
    pages = sorted(folder.glob("*-callvolume.json"))
    assert pages, "the probe recorded the callvolume replies"
    return [r for page in pages for r in json.loads(page.read_text())["CallVolumeUpdate"]]
