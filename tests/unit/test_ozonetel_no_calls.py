"""Ozonetel with no calls in the window: "No Data Found" (the sibling report APIs' words), or a zero, empty
or null AHT. The target's series goes, and the poll succeeds, also when every target says it.

Shapes and their sources: tests/fixtures/ozonetel_aht_no_calls.json. Mocked HTTP on a fast-forwarded loop.
"""

import json
import logging
from typing import Any

import httpx
import pytest
import respx

from aht_exporter.exposition import render
from aht_exporter.model import AverageUpdate, Names, make_labels
from aht_exporter.redact import Redactor
from aht_exporter.scheduler import SourceRunner
from tests.helpers import fixture, parse_exposition, samples
from tests.unit.test_ozonetel_http import (
    AHT,
    KEY,
    TOKEN,
    agent_reply,
    by_target,
    campaign_reply,
    error_reply,
    make,
    mock,
    token_reply,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.looptime]

__all__ = ["mock"]  # the respx fixture, shared with test_ozonetel_http

NO_CALLS = fixture("ozonetel_aht_no_calls.json")
SHAPES = [name for name in NO_CALLS if not name.startswith("_")]
SOURCE = (("provider", "ozonetel"), ("source", "oz"))
A1_SERIES = (("agent", "a1"), ("media_type", "voice"), ("provider", "ozonetel"), ("source", "oz"), ("window", "2h"))


def reply(shape: str) -> httpx.Response:
    return httpx.Response(200, json=NO_CALLS[shape])


def assert_sent(request: httpx.Request, body: dict[str, str], token: str = "tok-1") -> None:
    assert (request.method, str(request.url)) == ("POST", AHT)
    assert request.headers["Authorization"] == f"Bearer {token}"
    assert request.headers["apiKey"] == KEY
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == body


async def test_no_data_found_after_a_value_removes_the_series_and_the_source_stays_up(
    mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    token = mock.post(TOKEN).mock(return_value=token_reply())
    aht = mock.post(AHT).mock(side_effect=[agent_reply(aht="00:05:00"), reply("no data found"), reply("no data found")])
    provider, health, clock = make()
    runner = SourceRunner(provider.config, provider, clock=clock, redactor=Redactor([]))

    assert await runner.poll()
    first = parse_exposition(render([runner.view()]).text.decode())
    assert samples(first, "aht_seconds") == {A1_SERIES: 300.0}
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            clock.advance(300)
            assert await runner.poll()
            series = parse_exposition(render([runner.view()]).text.decode())
            assert samples(series, "aht_seconds") == {}  # absent, as for every provider when nothing was handled
            assert series[("aht_exporter_source_up", SOURCE)] == 1
    assert [r.getMessage() for r in caplog.records] == []  # no "targets not refreshed": nothing went wrong
    assert health.up and health.last_error is None
    assert token.call_count == 1 and aht.call_count == 3
    for call in aht.calls:
        assert_sent(call.request, {"userName": "acme", "agentId": "a1"})
    assert await provider.names() == Names(agents={"a1": "Asha Rao"})
    await provider.aclose()


async def test_no_data_found_from_every_target_is_a_successful_poll_without_series(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    aht = mock.post(AHT).mock(return_value=reply("no data found"))
    provider, health, clock = make(agents=["a1", "a2"], campaigns=["Sales Outbound"])
    runner = SourceRunner(provider.config, provider, clock=clock, redactor=Redactor([]))

    for _ in range(3):  # a quiet night: every target, every poll
        assert await runner.poll()
        series = parse_exposition(render([runner.view()]).text.decode())
        assert samples(series, "aht_seconds") == {}
        assert series[("aht_exporter_source_up", SOURCE)] == 1
        clock.advance(300)
    assert health.up and health.consecutive_failures == 0 and health.polls == {"success": 3}
    assert [json.loads(c.request.content) for c in aht.calls[:3]] == [
        {"userName": "acme", "agentId": "a1"},
        {"userName": "acme", "agentId": "a2"},
        {"userName": "acme", "campaignName": "Sales Outbound"},
    ]
    for call in aht.calls:
        assert_sent(call.request, json.loads(call.request.content))
    await provider.aclose()


@pytest.mark.parametrize("shape", SHAPES)
async def test_every_no_calls_shape_removes_a_series_the_target_had(mock: respx.MockRouter, shape: str) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    aht = mock.post(AHT).mock(side_effect=[agent_reply(aht="00:05:00"), reply(shape)])
    provider, _, _ = make()
    a1 = make_labels(agent="a1", media_type="voice")

    assert await provider.fetch_averages() == AverageUpdate({a1: 300.0})
    assert await provider.fetch_averages() == AverageUpdate({a1: None})  # None: the series is absent

    assert_sent(aht.calls[1].request, {"userName": "acme", "agentId": "a1"})
    await provider.aclose()


@pytest.mark.parametrize("shape", SHAPES)
async def test_every_no_calls_shape_from_every_target_still_makes_a_successful_poll(
    mock: respx.MockRouter, shape: str
) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.post(AHT).mock(return_value=reply(shape))
    provider, _, _ = make(agents=["a1"])
    update = await provider.fetch_averages()
    assert not [v for v in update.averages.values() if v is not None] and not update.removed
    await provider.aclose()


@pytest.mark.parametrize("http", [400, 404])
async def test_no_data_found_in_an_error_status_means_no_calls_too(mock: respx.MockRouter, http: int) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    aht = mock.post(AHT).mock(side_effect=[agent_reply(), error_reply("No Data Found", http=http)])
    provider, _, _ = make()
    await provider.fetch_averages()
    assert await provider.fetch_averages() == AverageUpdate({make_labels(agent="a1", media_type="voice"): None})
    assert aht.call_count == 2  # not retried
    await provider.aclose()


async def test_a_campaign_never_answered_before_has_no_series_to_remove(mock: respx.MockRouter) -> None:
    # Its series is labelled by the CampaignID, which only a reply with data gives: nothing to remove yet.
    mock.post(TOKEN).mock(return_value=token_reply())
    replies: dict[str, Any] = {"Sales": reply("no data found"), "Old": campaign_reply("12", "Old", "00:00:40")}
    mock.post(AHT).mock(side_effect=lambda request: replies[by_target(request)])
    provider, _, _ = make(agents=[], campaigns=["Sales", "Old"])
    assert await provider.fetch_averages() == AverageUpdate({make_labels(media_type="voice", queue="12"): 40.0})
    replies["Old"] = reply("no data found")
    assert await provider.fetch_averages() == AverageUpdate({make_labels(media_type="voice", queue="12"): None})
    await provider.aclose()


async def test_a_target_with_calls_again_gets_its_series_back(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.post(AHT).mock(side_effect=[agent_reply(aht="00:05:00"), reply("no data found"), agent_reply(aht="00:01:00")])
    provider, _, _ = make()
    a1 = make_labels(agent="a1", media_type="voice")
    assert [(await provider.fetch_averages()).averages for _ in range(3)] == [{a1: 300.0}, {a1: None}, {a1: 60.0}]
    await provider.aclose()


async def test_each_no_data_found_is_published_as_it_arrives(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    replies = {"a1": agent_reply("a1", "00:01:00"), "a2": agent_reply("a2", "00:02:00")}
    mock.post(AHT).mock(side_effect=lambda request: replies[by_target(request)])
    provider, _, _ = make(agents=["a1", "a2"])
    await provider.fetch_averages()
    replies["a1"] = reply("no data found")
    published: list[AverageUpdate] = []
    await provider.fetch_averages(published.append)
    a1, a2 = make_labels(agent="a1", media_type="voice"), make_labels(agent="a2", media_type="voice")
    assert published == [AverageUpdate({a1: None}), AverageUpdate({a2: 120.0})]
    await provider.aclose()


async def test_no_data_found_does_not_vouch_for_targets_whose_replies_failed(mock: respx.MockRouter) -> None:
    # A schema change that breaks the replies with data must not pass for a quiet night.
    mock.post(TOKEN).mock(return_value=token_reply())
    broken = httpx.Response(200, json={"status": "success", "message": {"AgentID": "a2"}})  # AHT is gone
    aht = mock.post(AHT).mock(
        side_effect=lambda request: reply("no data found") if by_target(request) == "a1" else broken
    )
    provider, health, clock = make(agents=["a1", "a2"])
    runner = SourceRunner(provider.config, provider, clock=clock, redactor=Redactor([]))
    assert not await runner.poll()
    assert (
        health.last_error == "data request to in1-ccaas-api.ozonetel.com POST /ca_apis/aht for agent 'a2': "
        "Object missing required field `AHT` - at `$.message`"
    )
    assert [json.loads(c.request.content) for c in aht.calls] == [
        {"userName": "acme", "agentId": "a1"},
        {"userName": "acme", "agentId": "a2"},
    ]
    await provider.aclose()
