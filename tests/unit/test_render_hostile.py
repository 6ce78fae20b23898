"""Hostile vendor text and broken snapshots against the exposition and its render loop (issue 12, section 1).

A render must never die: a value that cannot be encoded is replaced with U+FFFD, a source whose data cannot be
rendered is left out (and shown down) while the others render, and the render loop outlives any failure.
"""

from __future__ import annotations

import logging
import subprocess
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from aht_exporter.clock import FakeClock
from aht_exporter.exposition import Renderer, SourceView, render
from aht_exporter.health import SourceHealth
from aht_exporter.model import Bucket, Field, Labels, Names, Sums, clean_text, make_labels
from aht_exporter.registry import build_config
from aht_exporter.scheduler import Exporter
from aht_exporter.store import Snapshot, SourceStore
from aht_exporter.timebuckets import Duration
from tests.helpers import T0, parse_exposition, samples
from tests.prometheus_bin import require

FIELDS = frozenset({Field.HANDLE_TIME, Field.CONTACTS_HANDLED})
END = 1772445600
B = 1800


def view(source: str, windows: dict[Labels, Sums], names: Names | None = None) -> SourceView:
    health = SourceHealth(source, "genesys", 3, up=True, polled=True, last_success=END - 60.0, data_end=END)
    return SourceView(health, Snapshot(END, FIELDS, {"30m": windows}, names or Names()))


GOOD: dict[Labels, Sums] = {
    make_labels(media_type="voice", queue="q1"): Sums(handle_time_seconds=300.0, contacts_handled=2)
}


def test_a_lone_surrogate_in_a_label_value_that_reached_the_exposition_becomes_u_fffd() -> None:
    # The store cleans label values as they enter; a snapshot made any other way must still render.
    labels = make_labels(media_type="voice", queue="bad\ud800id")
    names = Names()
    object.__setattr__(names, "queues", {"bad\ud800id": "bad\udfffname"})  # past Names' own cleaning
    text = render([view("hostile", {labels: GOOD[next(iter(GOOD))]}, names), view("fine", GOOD)]).text.decode()
    series = parse_exposition(text)
    assert samples(series, "aht_seconds", source="hostile", queue="bad\ufffdid")
    assert samples(series, "aht_queue_info", queue_name="bad\ufffdname")
    assert samples(series, "aht_seconds", source="fine")


def test_a_source_whose_data_cannot_render_is_left_out_and_the_others_render(caplog: pytest.LogCaptureFixture) -> None:
    renderer = Renderer()
    broken: dict[Labels, Sums] = {
        make_labels(queue="q1"): Sums(handle_time_seconds=cast(Any, "not a number"), contacts_handled=1)
    }
    views = [view("broken", broken), view("fine", GOOD)]
    with caplog.at_level(logging.ERROR):
        series = parse_exposition(renderer.render(views).text.decode())
    assert samples(series, "aht_seconds", source="broken") == {}
    assert samples(series, "aht_seconds", source="fine") == {
        (("media_type", "voice"), ("provider", "genesys"), ("queue", "q1"), ("source", "fine"), ("window", "30m")): 150
    }
    assert list(renderer.failures) == ["broken"]
    assert "TypeError" in renderer.failures["broken"]
    (record,) = caplog.records
    assert record.getMessage() == "render failed" and record.__dict__["source"] == "broken"
    # The same snapshot is not tried again, nor reported again; the healthy source still renders.
    caplog.clear()
    again = parse_exposition(renderer.render(views).text.decode())
    assert renderer.failures == {} and caplog.records == []
    assert samples(again, "aht_seconds", source="fine")


# --- any text, through the store, the names and the render ----------------------------------------------------

# Any character, with lone surrogates and control characters far more often than chance would bring them.
CHARACTER = (
    st.characters(exclude_categories=())
    | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
    | st.characters(max_codepoint=0x9F)
    | st.sampled_from('"\\\n')
)
TEXT = st.text(CHARACTER, max_size=40) | st.sampled_from(
    ["bad\ud800name", 'quo"te\\back', "new\nline\r\n", "\x00\x1b[31m\x7f\x85", "\u2028\u2029", "x" * 3000]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queue=TEXT, media_type=TEXT, queue_name=TEXT, agent=TEXT, agent_name=TEXT)
def test_any_vendor_text_renders_to_an_exposition_both_parsers_read_back(
    queue: str, media_type: str, queue_name: str, agent: str, agent_name: str
) -> None:
    store = SourceStore(bucket=B, windows=[Duration.parse("30m")], fields=FIELDS)
    labels = make_labels(media_type=media_type, queue=queue, agent=agent)
    store.replace(END - B, END, [Bucket(END - B, END, labels, {Field.HANDLE_TIME: 90.0, Field.CONTACTS_HANDLED: 1})])
    snap = store.snapshot(END, Names(queues={queue: queue_name}, agents={agent: agent_name}))
    health = SourceHealth("hostile", "genesys", 3, up=True, polled=True)
    rendered = render([SourceView(health, snap), view("fine", GOOD)])
    text = rendered.text.decode("utf-8")  # strict: a surrogate would have been an encode error
    series = parse_exposition(text)
    (got,) = samples(series, "aht_seconds", source="hostile")
    assert dict(got) == {
        "media_type": clean_text(media_type),
        "queue": clean_text(queue),
        "agent": clean_text(agent),
        "source": "hostile",
        "provider": "genesys",
        "window": "30m",
    }
    assert list(samples(series, "aht_queue_info", queue_name=clean_text(queue_name))) != []
    assert list(samples(series, "aht_agent_info", agent_name=clean_text(agent_name))) != []
    assert samples(series, "aht_seconds", source="fine")
    assert all(len(v) <= 1024 for labels in samples(series, "aht_seconds") for _, v in labels)
    assert {f.name for f in parse_openmetrics(rendered.openmetrics.decode("utf-8"))} >= {"aht_seconds"}  # type: ignore[no-untyped-call]
    assert {f.name for f in text_string_to_metric_families(text)} >= {"aht_queue_info", "aht_agent_info"}


def test_hostile_label_values_pass_promtool_check_metrics() -> None:
    promtool = require("promtool")
    store = SourceStore(bucket=B, windows=[Duration.parse("30m")], fields=FIELDS)
    hostile = ["bad\ud800name", 'quo"te\\back', "new\nline", "\x00\x1b[31m\x7f\x85", "x" * 3000]
    store.replace(
        END - B,
        END,
        [
            Bucket(
                END - B, END, make_labels(media_type=v, queue=v), {Field.HANDLE_TIME: 1.0, Field.CONTACTS_HANDLED: 1}
            )
            for v in hostile
        ],
    )
    snap = store.snapshot(END, Names(queues={v: v for v in hostile}))
    text = render([SourceView(SourceHealth("hostile", "genesys", 3, up=True, polled=True), snap)]).text
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30, check=False)
    # promtool's lint warnings (none expected) go to stdout with exit 3; a parse error exits 1.
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()


# --- the render loop ----------------------------------------------------------------------------------------


def two_sources() -> Exporter:
    sources = [
        {"name": name, "provider": "genesys", "region": "mypurecloud.ie", "client_id": "id", "client_secret": "s3cret"}
        for name in ("broken", "fine")
    ]
    return Exporter(build_config({"sources": sources}, "<test>", {}), clock=FakeClock(T0))


@pytest.mark.asyncio
async def test_a_render_that_raises_is_logged_once_and_the_next_render_still_happens(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = two_sources()
    first = exporter.rendered
    real = exporter._renderer.render
    fail = [2]

    def flaky(views: Any) -> Any:
        if fail[0]:
            fail[0] -= 1
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return real(views)

    monkeypatch.setattr(exporter._renderer, "render", flaky)
    with caplog.at_level(logging.ERROR):
        for _ in range(2):  # two polls' renders fail: the last bodies stay, the error is logged once
            exporter.request_render()
            assert await exporter.rendered_now() is first
    (record,) = caplog.records
    assert record.getMessage() == "render failed: /metrics keeps its last body"
    assert "UnicodeEncodeError" in record.__dict__["error"]
    exporter.runners[1].health.record_success(T0, 0.1, END)
    exporter.request_render()  # the loop is not dead: the next poll's render shows it
    series = parse_exposition((await exporter.rendered_now()).text.decode())
    assert list(samples(series, "aht_exporter_source_up", source="fine").values()) == [1.0]
    await exporter.aclose()


@pytest.mark.asyncio
async def test_a_source_whose_data_cannot_render_shows_down_and_the_other_is_untouched(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter = two_sources()
    broken, fine = exporter.runners
    # Not a number where the store promises one: Any lets the bad value through to the renderer.
    bad: dict[Labels, Sums] = {make_labels(queue="q1"): Sums(handle_time_seconds=cast(Any, "x"), contacts_handled=1)}
    for runner, windows in ((broken, bad), (fine, GOOD)):
        runner.snapshot = Snapshot(END, FIELDS, {"30m": windows})
        runner.health.record_success(T0, 0.1, END)
    with caplog.at_level(logging.ERROR):
        exporter.request_render()
        series = parse_exposition((await exporter.rendered_now()).text.decode())
    assert list(samples(series, "aht_exporter_source_up", source="broken").values()) == [0.0]
    assert samples(series, "aht_seconds", source="broken") == {}
    assert list(samples(series, "aht_exporter_source_up", source="fine").values()) == [1.0]
    assert list(samples(series, "aht_seconds", source="fine").values()) == [150.0]
    assert broken.health.last_error is not None and "could not be rendered" in broken.health.last_error
    assert [r.getMessage() for r in caplog.records] == ["render failed"]
    await exporter.aclose()
