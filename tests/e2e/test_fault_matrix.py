"""The fault matrix: every fault x every provider, end to end over real loopback HTTP.

For each: the daemon keeps serving /metrics; only the faulted provider's sources go down; the others
keep polling with unchanged values; the error counter and the status page say what happened; the log
has one line with source= and no traceback; the next poll after the fault clears recovers. And after
`stale_after` failures a source's data series are withdrawn, and return on recovery.

Every test runs on looptime's fast-forwarded event loop: request timeouts, the poll's deadline, a slow
vendor's answer, the accounts' pacing and Ozonetel's minute of pause are loop time, which moves on as soon as
the loop has nothing else to do: no test waits on the wall clock, and none fails because a busy machine
made a 300 ms timeout fire. The stack is built inside each test, so that it lives on that loop's time from
its first timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from aht_exporter.clock import FakeClock
from aht_exporter.providers.ozonetel import PAUSE_SECONDS
from aht_exporter.registry import build_config
from aht_exporter.scheduler import Exporter
from aht_exporter.server import start_server
from aht_exporter.simulator.demo import Demo
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
# Loop seconds a test may take, fault and recovery: minutes of pacing and pauses fit; a hang fails instead.
BOUND = 3600.0

pytestmark = [pytest.mark.asyncio, pytest.mark.looptime]


SAMPLE_LINE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')
ESCAPED = re.compile(r'\\[\\n"]')
UNESCAPED = {"\\\\": "\\", "\\n": "\n", '\\"': '"'}


def quick_parse(text: str) -> Series:
    """What `parse_exposition` makes of a text exposition, at a fraction of its cost.

    The matrix reads about 2,500 samples per scrape, three scrapes a test, every fault of every provider:
    prometheus_client's parser, a character at a time, was most of the matrix's CPU. A line this cannot
    read fails the test; test_quick_parse_reads_what_prometheus_client_reads holds the two parsers to the
    same result."""
    out: Series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        sample = SAMPLE_LINE.fullmatch(line)
        assert sample is not None, f"not a sample line: {line!r}"
        name, labels, value = sample.groups()
        pairs = LABEL_PAIR.findall(labels or "")
        assert "".join(f'{k}="{v}",' for k, v in pairs).rstrip(",") == (labels or "").rstrip(","), line
        key = tuple(sorted((k, ESCAPED.sub(lambda m: UNESCAPED[m.group(0)], v)) for k, v in pairs))
        out[(name, key)] = float(value)
    return out


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
        return quick_parse(r.text)

    def sources_of(self, provider: str) -> list[str]:
        return [s.name for s in self.exporter.config.sources if s.provider == provider]


@pytest.fixture(autouse=True)
def short_poll_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # A slow answer must outlast the poll: a 2-second poll deadline instead of `every` less 10 s.
    monkeypatch.setattr("aht_exporter.scheduler.poll_deadline", lambda config: 2.0)


@contextlib.asynccontextmanager
async def running_stack() -> AsyncIterator[Stack]:
    """The fleet, an exporter polling it and an HTTP client of its server, torn down after the test; the
    whole of it bounded by BOUND seconds of loop time."""
    clock = FakeClock(T0)
    fleet = await start_fleet(clock)
    defaults = {"timeout": "300ms", "stale_after": 3, "max_response_size": MATRIX_RESPONSE_CAP}
    raw: dict[str, Any] = {"defaults": defaults, "sources": fleet.sources}
    sleep = RecordingSleep()  # retries back off on a recorded clock, not the wall
    exporter = Exporter(build_config(raw, "<matrix>", {}), clock=clock, sleep=sleep)
    runner, bound = await start_server(exporter, "127.0.0.1:0")
    try:
        async with asyncio.timeout(BOUND), httpx.AsyncClient(base_url=f"http://{bound[0]}") as client:
            yield Stack(fleet, exporter, client, sleep)
    finally:
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


async def test_quick_parse_reads_what_prometheus_client_reads() -> None:
    async with running_stack() as stack:
        assert await stack.exporter.poll_all()
        await stack.exporter.rendered_now()
        body = (await stack.client.get("/metrics")).text
    assert len(quick_parse(body)) > 1000
    assert quick_parse(body) == parse_exposition(body)
    # What the demo's names do not hold: every escape, braces, commas and spaces in label values.
    tricky = (
        "# HELP x_total A help text.\n# TYPE x_total counter\n"
        'x_total{a="back\\\\slash",b="quo\\"te",c="new\\nline",d="} {x=\\"1\\"}, 2"} 3\n'
        'x_total{a=""} +Inf\nx_total -1.5e-3\n'
    )
    assert quick_parse(tricky) == parse_exposition(tricky)
    assert len(quick_parse(tricky)) == 3


@pytest.mark.parametrize(("provider", "fault"), CASES, ids=[f"{p}-{f.value}" for p, f in CASES])
async def test_a_fault_downs_only_its_provider_and_clears(
    provider: str, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_stack() as stack:
        await fault_and_recovery(stack, provider, fault, caplog)


async def fault_and_recovery(stack: Stack, provider: str, fault: Fault, caplog: pytest.LogCaptureFixture) -> None:
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
    if provider == "ozonetel":
        # Ozonetel pauses its account for a minute after "max limit exceeded": let that minute pass (loop
        # time: no real wait), as the daemon's next poll would.
        await asyncio.sleep(PAUSE_SECONDS)
    assert await stack.exporter.poll_all()
    after = await stack.scrape()
    for name in faulted + others:
        assert up(after, name) == 1
        assert data_of(after, name) == data_of(before, name)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_after_stale_after_failures_data_is_withdrawn_and_returns(provider: str) -> None:
    async with running_stack() as stack:
        await withdrawal_and_return(stack, provider)


async def withdrawal_and_return(stack: Stack, provider: str) -> None:
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
