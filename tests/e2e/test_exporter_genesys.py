"""The exporter against the Genesys simulator over real loopback HTTP: /metrics equals ground truth."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from aht_exporter.clock import FakeClock
from aht_exporter.config import SourceConfig
from aht_exporter.model import Labels
from aht_exporter.providers.genesys import AGGREGATES_PATH, GenesysConfig, fields_for, query_body
from aht_exporter.scheduler import Exporter
from aht_exporter.simulator.demo import demo_config, demo_workload
from aht_exporter.simulator.genesys import TOKEN_PATH, GenesysSimulator, demo_sources
from aht_exporter.simulator.workload import Totals
from tests.e2e.conftest import Stack
from tests.helpers import T0, Series, parse_exposition, samples

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


async def _data_after_one_poll(**sim_options: Any) -> tuple[Series, list[dict[str, Any]]]:
    """The demo's Genesys sources polled once against a simulator with `sim_options`: the data series, and
    what the simulator answers to the first source's query (its raw `results`)."""
    clock = FakeClock(T0)
    sim = GenesysSimulator(demo_workload(), clock, client_id="demo-client", client_secret="demo-secret", **sim_options)
    url = await sim.start()
    config = demo_config(demo_sources(url))
    exporter = Exporter(config, clock=clock)
    try:
        assert await exporter.poll_all()
        text = (await exporter.rendered_now()).text.decode()
        source = config.sources[0]
        assert isinstance(source, GenesysConfig)
        async with httpx.AsyncClient(base_url=url) as http:
            login = await http.post(
                TOKEN_PATH, auth=("demo-client", "demo-secret"), data={"grant_type": "client_credentials"}
            )
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            body = query_body(T0 - 86400 - 420, T0 - 420, source)
            results: list[dict[str, Any]] = (await http.post(AGGREGATES_PATH, json=body, headers=headers)).json()[
                "results"
            ]
    finally:
        await exporter.aclose()
        await sim.stop()
    data = {k: v for k, v in parse_exposition(text).items() if k[0].startswith("aht_") and "exporter" not in k[0]}
    return data, results


@pytest.mark.asyncio
async def test_zeros_sent_as_count_0_without_sum_export_exactly_what_zeros_left_out_do() -> None:
    """Issue 13: `{"count": 0}` without `sum` failed the whole poll. The simulator sends zeros so by default;
    the same workload with zeros left out (Genesys's documented sparseness) gives the same series."""
    zeros, zero_replies = await _data_after_one_poll()
    left_out, left_out_replies = await _data_after_one_poll(zero_metrics=False)

    def stats(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [m["stats"] for r in results for d in r["data"] for m in d["metrics"]]

    assert {"count": 0} in stats(zero_replies) and {"count": 0} not in stats(left_out_replies)
    assert all("sum" not in s for s in stats(zero_replies) if s["count"] == 0)
    assert zeros == left_out and len(zeros) > 100
