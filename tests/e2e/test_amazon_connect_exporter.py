"""The exporter against the Amazon Connect simulator over real loopback HTTP: /metrics equals ground truth.

Every request is SigV4-signed by the provider and checked by the simulator with botocore's signer; the
simulator's clock is a FakeClock (the workload's time), and every test runs on looptime's fake loop clock, so
that a retry's wait after a throttling costs no real time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from aht_exporter.clock import FakeClock
from aht_exporter.model import Field, Labels
from aht_exporter.providers.amazon_connect import AmazonConnectConfig
from aht_exporter.providers.amazon_connect_api import fields_for
from aht_exporter.simulator.amazon_connect import DEMO_SECRET_KEY, AmazonConnectSimulator, demo_simulator, demo_source
from aht_exporter.simulator.demo import demo_workload
from aht_exporter.simulator.faults import Fault
from aht_exporter.simulator.workload import Totals
from aht_exporter.timebuckets import final_until
from tests.e2e.stack import Stack as BaseStack
from tests.e2e.stack import serve_stack
from tests.helpers import T0, Series, samples

pytestmark = [pytest.mark.asyncio, pytest.mark.looptime]

# Each field the provider reports, and what the workload's truth calls it.
TRUTH = {
    Field.HANDLE_TIME: "handle_seconds",
    Field.CONTACTS_HANDLED: "contacts_handled",
    Field.TALK_TIME: "talk_seconds",
    Field.HOLD_TIME: "hold_seconds",
    Field.ACW_TIME: "acw_seconds",
    Field.CONTACTS_OFFERED: "contacts_offered",
    Field.CONTACTS_ABANDONED: "contacts_abandoned",
}
NAME = "demo-amazon-connect"
WRONG_SECRET = "wrong/secret/key/0123456789abcdefghijklmn"


class Stack(BaseStack[AmazonConnectSimulator]):
    def source(self, name: str = NAME) -> AmazonConnectConfig:
        source = next(s for s in self.config.sources if s.name == name)
        assert isinstance(source, AmazonConnectConfig)
        return source

    def health(self, name: str = NAME) -> Any:
        return next(r.health for r in self.exporter.runners if r.name == name)


StackFactory = Callable[..., Any]


@pytest_asyncio.fixture
async def make_stack() -> AsyncIterator[StackFactory]:
    """A simulator fed by the demo workload and an exporter polling it, with source overrides."""
    cleanups: list[Callable[[], Any]] = []

    async def build(*sources: dict[str, Any]) -> Stack:
        clock = FakeClock(T0)
        return await serve_stack(Stack, clock, demo_simulator(demo_workload(), clock), demo_source, sources, cleanups)

    yield build
    for cleanup in reversed(cleanups):
        await cleanup()


def exported(series: Series, name: str, source: str, **match: str) -> dict[Labels, float]:
    return {
        tuple((k, v) for k, v in labels if k not in ("source", "provider", "window")): value
        for labels, value in samples(series, name, source=source, **match).items()
    }


def key(name: str = NAME) -> tuple[tuple[str, str], ...]:
    return (("provider", "amazon_connect"), ("source", name))


def assert_matches_truth(stack: Stack, series: Series, source: AmazonConnectConfig) -> int:
    """Every gauge of every window and label set, and every AHT, equals the workload's truth."""
    assert series[("aht_exporter_source_up", key(source.name))] == 1
    data_end = int(series[("aht_exporter_data_end_timestamp_seconds", key(source.name))])
    fields = fields_for(source.group_by)
    checked = 0
    for window in source.windows:
        truth: dict[Labels, Totals] = stack.sim.truth(
            data_end - window.seconds, data_end, source.group_by, stack.clock.now()
        )
        assert truth, f"the workload has contacts in {window}"
        for field in fields:
            got = exported(series, f"aht_{field.value}", source.name, window=window.text)
            want = {labels: float(getattr(t, TRUTH[field])) for labels, t in truth.items()}
            assert got.keys() == want.keys(), f"{source.name} {window} {field}: label sets differ"
            for labels, value in want.items():
                assert got[labels] == pytest.approx(value, abs=1e-6), (window, field, labels)
                checked += 1
        aht = exported(series, "aht_seconds", source.name, window=window.text)
        want_aht = {lab: t.handle_seconds / t.contacts_handled for lab, t in truth.items() if t.contacts_handled}
        assert aht.keys() == want_aht.keys()
        for labels, value in want_aht.items():
            assert aht[labels] == pytest.approx(value, abs=1e-9)
    return checked


@pytest.mark.parametrize(
    "group_by",
    [["media_type", "queue"], ["agent"], ["queue", "agent"], ["media_type", "queue", "agent"], ["media_type"], []],
)
async def test_every_grouping_equals_the_workload_truth(make_stack: StackFactory, group_by: list[str]) -> None:
    stack = await make_stack({"group_by": group_by})
    assert await stack.exporter.poll_all(), stack.health().last_error
    series = await stack.scrape()
    assert assert_matches_truth(stack, series, stack.source()) > 10
    if "agent" in group_by:  # contacts without an agent are counted in no agent's figures
        assert not samples(series, "aht_contacts_abandoned", source=NAME)
        assert not samples(series, "aht_contacts_offered", source=NAME)
    if group_by == ["media_type", "queue"]:
        media = {dict(labels)["media_type"] for labels in samples(series, "aht_contacts_handled", source=NAME)}
        assert media == {"voice", "chat", "task", "email"}


async def test_queue_and_agent_names_are_exported_as_info(make_stack: StackFactory) -> None:
    stack = await make_stack({"group_by": ["queue", "agent"]})
    assert await stack.exporter.poll_all()
    series = await stack.scrape()
    queues = {dict(lab)["queue"]: dict(lab)["queue_name"] for lab in samples(series, "aht_queue_info")}
    assert queues == dict(demo_workload().queues)
    agents = {dict(lab)["agent"]: dict(lab)["agent_name"] for lab in samples(series, "aht_agent_info")}
    assert agents == {a: name.lower().replace(" ", ".") for a, name in demo_workload().agents}
    # Queues listed once at start (every standard queue: `queues` is empty), users once: names are hourly.
    assert stack.sim.requests[f"/queues-summary/{stack.sim.instance_id}"] == 1
    assert stack.sim.requests[f"/users-summary/{stack.sim.instance_id}"] == 1
    stack.clock.advance(300)
    assert await stack.exporter.poll_all()
    assert stack.sim.requests[f"/queues-summary/{stack.sim.instance_id}"] == 1
    assert stack.sim.requests[f"/users-summary/{stack.sim.instance_id}"] == 1


async def test_later_polls_slide_the_windows_and_the_total_counters_grow_by_final_buckets(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    source = stack.source()
    assert await stack.exporter.poll_all()
    first = await stack.scrape()
    end0 = int(first[("aht_exporter_data_end_timestamp_seconds", key())])
    # Counting begins at the first poll: the totals start at zero.
    assert set(exported(first, "aht_contacts_handled_total", NAME).values()) == {0.0}
    for _ in range(4):  # an hour, 15 minutes at a time
        stack.clock.advance(900)
        assert await stack.exporter.poll_all()
    series = await stack.scrape()
    assert_matches_truth(stack, series, source)
    end = int(series[("aht_exporter_data_end_timestamp_seconds", key())])
    assert end - end0 == 3600
    final = {
        e: final_until(e, bucket=900, longest_window=max(w.seconds for w in source.windows), refresh=7200)
        for e in (end0, end)
    }
    truth = stack.sim.truth(final[end0], final[end], source.group_by, stack.clock.now())
    assert truth
    for field in fields_for(source.group_by):
        got = exported(series, f"aht_{field.value}_total", NAME)
        want = {labels: float(getattr(t, TRUTH[field])) for labels, t in truth.items()}
        assert {k: v for k, v in got.items() if v} == pytest.approx({k: v for k, v in want.items() if v}, abs=1e-6)
    requests = samples(series, "aht_exporter_api_requests_total", source=NAME)
    assert {dict(labels)["endpoint"] for labels in requests} == {"metric_data", "queues"}
    assert all(dict(labels)["status"] == "200" for labels in requests)


async def test_a_wrong_secret_key_downs_its_source_only_and_never_the_daemon(make_stack: StackFactory) -> None:
    stack = await make_stack({}, {"name": "connect-wrong-key", "secret_access_key": WRONG_SECRET})
    assert not await stack.exporter.poll_all()  # not all sources are up
    series = await stack.scrape()
    assert series[("aht_exporter_source_up", key("connect-wrong-key"))] == 0
    assert_matches_truth(stack, series, stack.source())  # the other source is whole
    error = stack.health("connect-wrong-key").last_error
    assert error == (
        f"data request to {stack.sim.base_url.removeprefix('http://')} GET /queues-summary/"
        f"{stack.sim.instance_id}: HTTP 403: InvalidSignatureException: The request signature we calculated does "
        "not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the "
        "service documentation for details."
    )
    assert stack.sim.denied == {"InvalidSignatureException": 1}  # a 403 is not retried
    page = await stack.client.get("/")
    assert page.status_code == 200 and "InvalidSignatureException" in page.text
    for text in (page.text, (await stack.client.get("/metrics")).text, error):
        assert WRONG_SECRET not in text and DEMO_SECRET_KEY not in text
    # Still alive: the next poll goes out again, and fails the same way.
    stack.clock.advance(300)
    assert not await stack.exporter.poll_all()
    assert stack.sim.denied == {"InvalidSignatureException": 2}
    assert stack.health().up


@pytest.mark.parametrize("fault", [Fault.RATE_LIMITED, Fault.RATE_LIMITED_BARE])
async def test_throttling_is_survived_and_counted(make_stack: StackFactory, fault: Fault) -> None:
    stack = await make_stack()
    stack.sim.faults.inject(fault, count=2)
    assert await stack.exporter.poll_all(), stack.health().last_error
    series = await stack.scrape()
    assert_matches_truth(stack, series, stack.source())
    assert series[("aht_exporter_rate_limited_total", key())] == 2
    assert exported(series, "aht_exporter_api_requests_total", NAME, endpoint="metric_data", status="429") == {
        (("endpoint", "metric_data"), ("status", "429")): 2.0
    }


async def test_throttling_that_lasts_fails_the_poll_and_the_next_one_recovers(make_stack: StackFactory) -> None:
    stack = await make_stack()
    stack.sim.faults.inject(Fault.RATE_LIMITED)
    assert not await stack.exporter.poll_all()
    error = stack.health().last_error
    assert error is not None and error.endswith("POST /metrics/data: rate limited: ThrottlingException: Rate exceeded")
    stack.sim.faults.clear()
    stack.clock.advance(300)
    assert await stack.exporter.poll_all()
    series = await stack.scrape()
    assert_matches_truth(stack, series, stack.source())
    assert series[("aht_exporter_rate_limited_total", key())] >= 2


# What the source's last error says, per fault injected on GetMetricDataV2; None: survived.
FAULTS: dict[Fault, str | None] = {
    Fault.HTTP_503: "POST /metrics/data: HTTP 503",
    Fault.NOT_JSON: "metric data: response is not JSON (HTTP 200",
    Fault.TRUNCATED: "metric data: response is not JSON (HTTP 200",
    Fault.ERROR_IN_200: "the vendor answered 200 with an error: ?: Internal server error",
    Fault.MISSING_FIELD: "MetricInterval",
    Fault.UNAUTHORIZED: "HTTP 401: ExpiredTokenException: The security token included in the request is expired",
    Fault.EXTRA_FIELDS: None,
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_each_fault_fails_the_poll_clearly_or_is_survived(make_stack: StackFactory, fault: Fault) -> None:
    stack = await make_stack()
    stack.sim.faults.inject(fault, sticky=True)
    ok = await stack.exporter.poll_all()
    expected = FAULTS[fault]
    if expected is None:
        assert ok, stack.health().last_error
        assert_matches_truth(stack, await stack.scrape(), stack.source())
        return
    assert not ok
    error = stack.health().last_error
    assert error is not None and expected in error, error
    stack.sim.faults.clear()
    stack.clock.advance(300)
    assert await stack.exporter.poll_all()  # and the next poll recovers
    assert_matches_truth(stack, await stack.scrape(), stack.source())
