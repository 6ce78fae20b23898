"""The fault matrix: every fault x every provider, end to end over real loopback HTTP.

For each: the daemon keeps serving /metrics; only the faulted provider's sources go down; the others
keep polling with unchanged values; the error counter and the status page say what happened; the log
has one line with source= and no traceback; the next poll after the fault clears recovers. And after
`stale_after` failures a source's data series are withdrawn, and return on recovery.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr

from aht_exporter.clock import FakeClock
from aht_exporter.config import build_config
from aht_exporter.demo import Demo
from aht_exporter.providers.ozonetel import OzonetelProvider
from aht_exporter.scheduler import Exporter
from aht_exporter.server import start_server
from aht_exporter.simulator.faults import Fault
from tests.e2e.fleet import PROVIDERS, SCHEMA_ERRORS, start_fleet
from tests.helpers import T0, RecordingSleep, Series, parse_exposition, samples

# What the last error says, per fault; None: the fault must be survived (the poll succeeds).
EXPECTED: dict[Fault, str | None] = {
    Fault.TIMEOUT: "timed out",
    Fault.RESET: "Error",  # RemoteProtocolError / ReadError: the connection went away
    Fault.HTTP_500: "HTTP 500",
    Fault.HTTP_502: "HTTP 502",
    Fault.HTTP_503: "HTTP 503",
    Fault.RATE_LIMITED: "rate limited",
    Fault.RATE_LIMITED_BARE: "rate limited",
    Fault.UNAUTHORIZED: None,  # a new token, and the replay succeeds
    Fault.TRUNCATED: "not JSON",
    Fault.NOT_JSON: "not JSON",
    Fault.MISSING_FIELD: "",  # each provider names the field: checked per provider below
    Fault.WRONG_TYPE: "",
    Fault.EXTRA_FIELDS: None,  # new fields must not break anything
    Fault.ERROR_IN_200: "",
    Fault.SLOW: "poll did not finish",
    # Hostile vendors (issue 12): the matrix caps responses at 1 MiB (MATRIX_RESPONSE_CAP).
    Fault.ENDLESS_BODY: "response larger than max_response_size 1MiB (on the wire)",
    Fault.GZIP_BOMB: "response larger than max_response_size 1MiB (decompressed)",
    Fault.DEEP_JSON: "",
    Fault.HOSTILE_TEXT: "HTTP 400",
    Fault.HUGE_NUMBER: "",
    Fault.NEGATIVE_NUMBER: "",
}
MATRIX_RESPONSE_CAP = "1MiB"


@dataclass
class Stack:
    fleet: Demo
    exporter: Exporter
    client: httpx.AsyncClient
    sleep: RecordingSleep

    async def scrape(self) -> Series:
        await self.exporter.rendered_now()
        r = await self.client.get("/metrics")
        assert r.status_code == 200
        return parse_exposition(r.text)

    def sources_of(self, provider: str) -> list[str]:
        return [s.name for s in self.exporter.config.sources if s.provider == provider]


@pytest_asyncio.fixture
async def stack(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    # A slow answer must outlast the poll: a 2-second poll deadline instead of `every` less 10 s.
    monkeypatch.setattr("aht_exporter.scheduler.poll_deadline", lambda config: 2.0)
    clock = FakeClock(T0)
    fleet = await start_fleet(clock)
    defaults = {"timeout": "300ms", "stale_after": 3, "max_response_size": MATRIX_RESPONSE_CAP}
    raw: dict[str, Any] = {"defaults": defaults, "sources": fleet.sources}
    sleep = RecordingSleep()  # retries back off on a recorded clock, not the wall
    exporter = Exporter(build_config(raw, "<matrix>", {}), clock=clock, sleep=sleep)
    runner, bound = await start_server(exporter, "127.0.0.1:0")
    async with httpx.AsyncClient(base_url=f"http://{bound[0]}") as client:
        yield Stack(fleet, exporter, client, sleep)
    await runner.cleanup()
    await exporter.aclose()
    await fleet.stop()


def up(series: Series, source: str) -> float:
    (value,) = samples(series, "aht_exporter_source_up", source=source).values()
    return value


def data_of(series: Series, source: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        k: v
        for k, v in series.items()
        if k[0].startswith("aht_")
        and not k[0].startswith("aht_exporter")
        and not k[0].endswith("_labels_info")  # the routing labels: config, shown whatever the polls do
        and dict(k[1]).get("source") == source
    }


def secrets_of(exporter: Exporter) -> list[str]:
    values = []
    for source in exporter.config.sources:
        for name in type(source).model_fields:
            value = getattr(source, name)
            if isinstance(value, SecretStr):
                values.append(value.get_secret_value())
    assert values, "every provider has a secret"
    return values


async def assert_no_secret_leaks(stack: Stack, log_text: str) -> None:
    """No secret in the logs, /metrics (both formats), the status page, or any error text."""
    texts = {
        "logs": log_text,
        "/metrics": (await stack.client.get("/metrics")).text,
        "/metrics openmetrics": (await stack.client.get("/metrics", headers={"Accept": OPENMETRICS})).text,
        "/": (await stack.client.get("/")).text,
        "errors": " ".join(r.health.last_error or "" for r in stack.exporter.runners),
    }
    for secret in secrets_of(stack.exporter):
        for where, text in texts.items():
            assert secret not in text, f"a secret leaked into {where}"


OPENMETRICS = "application/openmetrics-text; version=1.0.0"

CASES = [(p, f) for p in PROVIDERS for f in Fault]


@pytest.mark.asyncio
@pytest.mark.parametrize(("provider", "fault"), CASES, ids=[f"{p}-{f.value}" for p, f in CASES])
async def test_a_fault_downs_only_its_provider_and_clears(
    stack: Stack, provider: str, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    assert await stack.exporter.poll_all()
    before = await stack.scrape()
    faulted = stack.sources_of(provider)
    others = [s.name for s in stack.exporter.config.sources if s.name not in faulted]

    if fault is Fault.SLOW:
        # Answers that come, but too late for the poll: each within a generous request timeout, so
        # that the poll's own deadline is what ends it.
        for runner in stack.exporter.runners:
            runner.provider.client.http.timeout = httpx.Timeout(10.0)
    stack.fleet.simulators[provider].faults.inject(fault, seconds=5.0)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        await stack.exporter.poll_all()
    during = await stack.scrape()
    expected = EXPECTED[fault] if EXPECTED[fault] != "" else SCHEMA_ERRORS[provider][fault]

    for name in others:  # untouched: up, and the same values
        assert up(during, name) == 1
        assert data_of(during, name) == data_of(before, name)
    for name in faulted:
        runner = next(r for r in stack.exporter.runners if r.name == name)
        if expected is None:
            assert up(during, name) == 1, runner.health.last_error
            assert data_of(during, name) == data_of(before, name)
            continue
        assert up(during, name) == 0
        assert expected in (runner.health.last_error or ""), runner.health.last_error
        assert data_of(during, name) == data_of(before, name)  # kept until stale_after
        assert samples(during, "aht_exporter_polls_total", source=name, result="error")
        lines = [r for r in caplog.records if getattr(r, "source", None) == name and r.levelno >= logging.WARNING]
        assert [r.getMessage() for r in lines] == ["poll failed"], [r.getMessage() for r in lines]
        assert all(r.exc_info is None for r in caplog.records), "no traceback for an expected fault"
        page = (await stack.client.get("/")).text
        assert "down (1 failed polls, keeping last data)" in page
        assert "<script>" not in page, "a vendor's markup is escaped on the status page"

    await assert_no_secret_leaks(stack, caplog.text)

    stack.fleet.simulators[provider].faults.clear()
    for runner in stack.exporter.runners:
        # Ozonetel pauses its account for a minute after "max limit exceeded": let that minute pass.
        if isinstance(runner.provider, OzonetelProvider):
            runner.provider.pacer().resume()
    assert await stack.exporter.poll_all()
    after = await stack.scrape()
    for name in faulted + others:
        assert up(after, name) == 1
        assert data_of(after, name) == data_of(before, name)


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_after_stale_after_failures_data_is_withdrawn_and_returns(stack: Stack, provider: str) -> None:
    assert await stack.exporter.poll_all()
    before = await stack.scrape()
    faulted = stack.sources_of(provider)
    stack.fleet.simulators[provider].faults.inject(Fault.HTTP_503)
    for expected_present in (True, True, False):
        await stack.exporter.poll_all()
        series = await stack.scrape()
        for name in faulted:
            assert bool(data_of(series, name)) is expected_present
            assert up(series, name) == 0  # health stays, only the data goes
    stack.fleet.simulators[provider].faults.clear()
    assert await stack.exporter.poll_all()
    after = await stack.scrape()
    for name in faulted:
        assert data_of(after, name) == data_of(before, name)
