"""`--demo.fault` as the README documents it: every fault visible, COUNT counts data requests, and `@AFTER`
starts a fault after successful polls, so that keeping and then withdrawing the data can be watched.

The demo's own simulators and the real Exporter over loopback HTTP, on a fake clock; retries back off on a
recorded clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from aht_exporter.clock import FakeClock
from aht_exporter.registry import build_config
from aht_exporter.scheduler import Exporter
from aht_exporter.simulator.demo import Demo
from tests.helpers import T0, RecordingSleep


@dataclass
class Stack:
    demo: Demo
    exporter: Exporter

    def runners(self, provider: str) -> list[Any]:
        return [r for r in self.exporter.runners if r.config.provider == provider]


@pytest_asyncio.fixture
async def stack() -> AsyncIterator[Stack]:
    clock = FakeClock(T0)
    demo = Demo(clock)
    await demo.start()
    raw: dict[str, Any] = {"defaults": {"timeout": "5s", "stale_after": 3}, "sources": demo.sources}
    exporter = Exporter(build_config(raw, "<demo>", {}), clock=clock, sleep=RecordingSleep())
    yield Stack(demo, exporter)
    await exporter.aclose()
    await demo.stop()


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", ["genesys", "liveperson", "ozonetel"])
async def test_a_401_fault_fails_the_poll_with_the_vendors_refusal(stack: Stack, provider: str) -> None:
    stack.demo.inject(f"{provider}:401")
    await stack.exporter.poll_all()
    for runner in stack.runners(provider):
        assert not runner.health.up
        assert "401" in (runner.health.last_error or ""), runner.health.last_error
    others = [r for r in stack.exporter.runners if r.config.provider != provider]
    assert others and all(r.health.up for r in others)


@pytest.mark.asyncio
async def test_count_is_the_next_count_data_requests_and_four_fail_a_poll(stack: Stack) -> None:
    stack.demo.inject("koreai:503:3")  # three failed attempts, the fourth answers: the poll succeeds
    await stack.exporter.poll_all()
    (runner,) = stack.runners("koreai")
    assert runner.health.up and runner.health.api_requests[("callvolume", "503")] == 3
    stack.demo.inject("koreai:503:4")  # every attempt of one request: the poll fails
    await stack.exporter.poll_all()
    assert not runner.health.up and "HTTP 503" in (runner.health.last_error or "")
    await stack.exporter.poll_all()
    assert runner.health.up  # COUNT ran out


@pytest.mark.asyncio
async def test_a_fault_after_n_successful_polls_keeps_then_withdraws_the_data(stack: Stack) -> None:
    stack.demo.inject("genesys:503@2")
    stack.demo.watch(stack.exporter)
    runners = stack.runners("genesys")
    for _ in range(2):
        assert await stack.exporter.poll_all()
    states = []
    for _ in range(3):
        await stack.exporter.poll_all()
        states.append([(r.health.up, r.health.stale, r.snapshot is not None) for r in runners])
    # Down at once, data kept for two failed polls, withdrawn at the third (stale_after 3).
    assert [s[0] for s in states] == [(False, False, True), (False, False, True), (False, True, True)]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("genesys:503@x", "after @"),
        ("genesys:503:0", "above 0"),
        ("genesys:nope@1", "no fault 'nope'"),
    ],
)
def test_a_bad_fault_spec_says_what_is_wrong(spec: str, message: str) -> None:
    demo = Demo(FakeClock(T0))
    demo.simulators["genesys"] = None  # type: ignore[assignment]  # parsing only: nothing is started
    with pytest.raises(ValueError, match=message):
        demo.inject(spec)
