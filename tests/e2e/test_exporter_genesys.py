"""The exporter against the Genesys simulator over real loopback HTTP: /metrics equals ground truth."""

from __future__ import annotations

import pytest

from aht_exporter.config import SourceConfig
from aht_exporter.model import Labels
from aht_exporter.providers.genesys import GenesysConfig, fields_for
from aht_exporter.simulator.workload import Totals
from tests.e2e.conftest import Stack
from tests.helpers import Series, samples

# Our gauge for each ground-truth attribute.
GAUGES = {
    "aht_handle_time_seconds": "handle_seconds",
    "aht_contacts_handled": "contacts_handled",
    "aht_talk_time_seconds": "talk_seconds",
    "aht_hold_time_seconds": "hold_seconds",
    "aht_acw_time_seconds": "acw_seconds",
    "aht_contacts_offered": "contacts_offered",
    "aht_contacts_answered": "contacts_answered",
    "aht_contacts_abandoned": "contacts_abandoned",
}


def exported(series: Series, name: str, source: str, window: str) -> dict[Labels, float]:
    """{group labels: value} for one gauge, one source, one window."""
    out = {}
    for labels, value in samples(series, name, source=source, window=window).items():
        out[tuple((k, v) for k, v in labels if k not in ("source", "provider", "window"))] = value
    return out


def assert_matches_truth(stack: Stack, series: Series, source: SourceConfig, as_of: float) -> int:
    """Every gauge of every window and label set equals the simulator's ground truth, to the millisecond."""
    assert isinstance(source, GenesysConfig)
    data_end = int(
        series[("aht_exporter_data_end_timestamp_seconds", (("provider", "genesys"), ("source", source.name)))]
    )
    fields = {f.value for f in fields_for(source.group_by)}
    checked = 0
    for window in source.windows:
        truth: dict[Labels, Totals] = stack.sim.truth(data_end - window.seconds, data_end, source.group_by, as_of)
        assert truth, f"the workload has contacts in {window}"
        for gauge, attr in GAUGES.items():
            got = exported(series, gauge, source.name, window.text)
            if gauge.removeprefix("aht_") not in fields:
                assert got == {}, f"{gauge} is not a field of {source.name}"
                continue
            want = {labels: float(getattr(t, attr)) for labels, t in truth.items()}
            assert got.keys() == want.keys(), f"{source.name} {window} {gauge}: label sets differ"
            for labels in want:
                assert got[labels] == pytest.approx(want[labels], abs=1e-6), (source.name, window, gauge, labels)
                checked += 1
        aht = exported(series, "aht_seconds", source.name, window.text)
        want_aht = {lab: t.handle_seconds / t.contacts_handled for lab, t in truth.items() if t.contacts_handled}
        assert aht.keys() == want_aht.keys()
        for labels, value in want_aht.items():
            assert aht[labels] == pytest.approx(value, abs=1e-9)
    return checked


@pytest.mark.asyncio
async def test_first_poll_equals_ground_truth_for_every_window_and_label_set(stack: Stack) -> None:
    assert await stack.exporter.poll_all()
    series = await stack.scrape()
    for source in stack.config.sources:
        assert series[("aht_exporter_source_up", (("provider", "genesys"), ("source", source.name)))] == 1
        assert assert_matches_truth(stack, series, source, stack.clock.now()) > 50


@pytest.mark.asyncio
async def test_later_polls_pick_up_revised_buckets_and_new_ones(stack: Stack) -> None:
    await stack.exporter.poll_all()
    before = await stack.scrape()
    # Five minutes on: contacts that ended before the boundary but were reported late now show up.
    stack.clock.advance(300)
    await stack.exporter.poll_all()
    after = await stack.scrape()
    for source in stack.config.sources:
        assert_matches_truth(stack, after, source, stack.clock.now())
    assert before != after
    # Past a 30-minute boundary: the windows slide.
    stack.clock.advance(1800)
    await stack.exporter.poll_all()
    slid = await stack.scrape()
    for source in stack.config.sources:
        assert_matches_truth(stack, slid, source, stack.clock.now())
    key = (("provider", "genesys"), ("source", "demo-genesys"))
    assert (
        slid[("aht_exporter_data_end_timestamp_seconds", key)]
        - before[("aht_exporter_data_end_timestamp_seconds", key)]
        == 1800
    )


@pytest.mark.asyncio
async def test_refresh_polls_ask_only_for_the_trailing_span(stack: Stack) -> None:
    await stack.exporter.poll_all()
    first = stack.sim.requests["/api/v2/analytics/conversations/aggregates/query"]
    assert first == 2  # one query per source: the 1d backfill fits max_query_span
    stack.clock.advance(300)
    await stack.exporter.poll_all()
    assert stack.sim.requests["/api/v2/analytics/conversations/aggregates/query"] == first + 2
    assert stack.sim.requests["/oauth/token"] == 2  # one token per source, cached


@pytest.mark.asyncio
async def test_queue_and_agent_names_are_exported_as_info(stack: Stack) -> None:
    await stack.exporter.poll_all()
    series = await stack.scrape()
    queue_names = {dict(lab)["queue"]: dict(lab)["queue_name"] for lab in samples(series, "aht_queue_info")}
    workload = stack.sim._workload
    assert queue_names == dict(workload.queues)
    agent_names = {dict(lab)["agent"]: dict(lab)["agent_name"] for lab in samples(series, "aht_agent_info")}
    assert agent_names and set(agent_names.items()) <= set(workload.agents)


@pytest.mark.asyncio
async def test_an_expired_token_is_replaced_without_failing_the_poll(stack: Stack) -> None:
    await stack.exporter.poll_all()
    stack.sim.expire_tokens()
    stack.clock.advance(300)
    assert await stack.exporter.poll_all()
    assert stack.sim.requests["/oauth/token"] == 4
