"""Parsers under fuzzing: arbitrary JSON-like values in, buckets or ProviderError out, nothing else."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from aht_exporter.exposition import SourceView, render
from aht_exporter.health import SourceHealth
from aht_exporter.model import AverageUpdate, Bucket, Field, Names, ProviderError, well_formed
from aht_exporter.providers.koreai import (
    Rules,
    latest_revisions,
    parse_page_json,
    parse_record,
    to_buckets,
)
from aht_exporter.providers.liveperson import Selection, parse_engactivity
from aht_exporter.providers.ozonetel import (
    Problem,
    Reading,
    ReplyError,
    Target,
    parse_aht_reply,
    parse_token_reply,
    reply_error,
)
from aht_exporter.store import Snapshot, SourceStore
from aht_exporter.timebuckets import Duration, isoformat_z
from tests.helpers import parse_aggregates, parse_callvolume

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)


# Numbers a hostile vendor sends: past any float, negative, at and past the bounds (model.MAX_SECONDS, MAX_COUNT).
HOSTILE_NUMBERS = st.sampled_from([10**400, -(10**400), 1.7e308, -1.7e308, -5, -0.0, 1e12, 1e15, 1e16, 2**63])


def scalar() -> st.SearchStrategy[Any]:
    return (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | HOSTILE_NUMBERS
        | st.text(max_size=30)
        | st.just([])
        | st.just({})
    )


def near_genesys() -> st.SearchStrategy[Any]:
    """Shaped like an aggregates answer, with any field possibly of the wrong type or missing."""
    stats = st.dictionaries(st.sampled_from(["sum", "count", "min", "max", "x"]), scalar(), max_size=4)
    metric = st.fixed_dictionaries(
        {},
        optional={
            "metric": st.sampled_from(["tHandle", "tAcw", "nOffered", "tTalkComplete"]) | scalar(),
            "stats": stats | scalar(),
        },
    )
    interval = (
        st.sampled_from(["2026-03-02T09:00:00.000Z/2026-03-02T09:30:00.000Z", "2026-03-02T09:00:00Z", "x/y", "/", ""])
        | scalar()
    )
    entry = st.fixed_dictionaries(
        {}, optional={"interval": interval, "metrics": st.lists(metric, max_size=3) | scalar()}
    )
    group = st.dictionaries(st.sampled_from(["mediaType", "queueId", "userId", "other"]), scalar(), max_size=3)
    result = st.fixed_dictionaries(
        {}, optional={"group": group | scalar(), "data": st.lists(entry, max_size=3) | scalar()}
    )
    return st.fixed_dictionaries({}, optional={"results": st.lists(result | scalar(), max_size=3) | scalar()}) | JSON


def assert_sane(result: object) -> None:
    """Whatever a parser lets through is usable: buckets with finite values, averages finite or None."""
    items = result if isinstance(result, list) else [result]
    for item in items:
        if isinstance(item, Bucket):
            # Finite and never negative: a negative AHT is no AHT (issue 12, section 6).
            assert all(math.isfinite(v) and v >= 0 for v in item.values.values()), item
        elif isinstance(item, AverageUpdate):
            assert all(v is None or math.isfinite(v) for v in item.averages.values()), item
        elif isinstance(item, Reading):
            assert item.seconds is None or (math.isfinite(item.seconds) and item.seconds >= 0), item
        elif isinstance(item, float):
            assert math.isfinite(item) and item >= 0, item


START, END = 1772445600 - 3600, 1772445600  # a closed hour


def near_liveperson() -> st.SearchStrategy[Any]:
    """engactivity-shaped: intervals with metricsData per skill and agent, any field possibly broken."""
    metrics = st.dictionaries(
        st.sampled_from(["totalHandlingTime", "totalInteractiveChats", "connectedEngagements", "x"]),
        scalar() | st.integers(min_value=0, max_value=10**6),
        max_size=3,
    )
    agents = st.dictionaries(st.sampled_from(["3", "7", "-1", "abc"]), metrics | scalar(), max_size=2)
    skills = st.dictionaries(
        st.sampled_from(["2", "-1", "x"]),
        st.fixed_dictionaries({}, optional={"metricsPerAgent": agents | scalar(), "metricsTotals": metrics}),
        max_size=2,
    )
    data = st.fixed_dictionaries(
        {},
        optional={
            "skillsMetricsPerAgent": st.fixed_dictionaries({}, optional={"metricsPerSkill": skills}),
            "metricsTotals": metrics,
        },
    )
    stamp = st.integers(min_value=(START - 600) * 1000, max_value=(END + 600) * 1000).map(lambda t: t - t % 300_000)
    interval = st.fixed_dictionaries({}, optional={"timestamp": stamp | scalar(), "metricsData": data | scalar()})
    return (
        st.fixed_dictionaries(
            {}, optional={"metricsByIntervals": st.lists(interval, max_size=4) | scalar(), "metricsTotals": metrics}
        )
        | JSON
    )


def near_koreai() -> st.SearchStrategy[Any]:
    """Contact Volume-shaped pages: records with any field possibly missing or mistyped."""
    stamp = st.sampled_from(["2026-03-02T09:00:00.000Z", "2026-03-02T09:15:00.000Z", "2026-03-02T09:07:00Z", "x"])
    number = scalar() | st.integers(min_value=0, max_value=10**7)
    record = st.fixed_dictionaries(
        {},
        optional={
            "intervalStartTimeStamp": stamp,
            "intervalEndTimeStamp": stamp,
            "queueId": scalar() | st.just("q1"),
            "source": st.sampled_from(["rtm", "voice", "email"]) | scalar(),
            "conversationHandleTime": number,
            "completedContacts": number,
            "conversationTalkTime": number,
            "acwDuration": number,
            "holdDuration": number,
            "offeredContacts": number,
            "answeredContacts": number,
            "abandonedContacts": number,
            "queueName": scalar(),
        },
    )
    return (
        st.fixed_dictionaries(
            {},
            optional={
                "hasMore": scalar(),
                "CallVolumeUpdate": st.lists(record, max_size=4) | scalar(),
                "totalCount": scalar(),
            },
        )
        | JSON
    )


def koreai_from_bytes(payload: Any) -> object:
    """The provider's own path: the reply's bytes (json.dumps writes NaN, Infinity and lone surrogates' escapes,
    which msgspec refuses and the parser reads through Python's json module) -> page -> records -> buckets."""
    page = parse_page_json(json.dumps(payload).encode())
    records = [parse_record(raw, i, Rules(bucket=900)) for i, raw in enumerate(page.records)]
    return to_buckets(latest_revisions(records), START, END, 900)


def near_ozonetel() -> st.SearchStrategy[Any]:
    """An AHT reply with `message` nested every way the parser reads it (an object, a list of one, a JSON text,
    the fields beside `status`), any field possibly missing or of the wrong type."""
    fields = st.fixed_dictionaries(
        {},
        optional={
            "AgentID": scalar(),
            "AgentName": scalar(),
            "AHT": st.sampled_from(["00:02:37", "1:00:00", "25:61:99", "", "x", "999999999:00:00"]) | scalar(),
        },
    )
    message = fields | st.lists(fields | scalar(), max_size=2) | fields.map(json.dumps) | scalar()
    status = st.sampled_from(["success", "error", "False", "true"]) | scalar()
    nested = st.fixed_dictionaries({}, optional={"status": status, "message": message})
    beside = st.tuples(st.fixed_dictionaries({"status": status}), fields).map(lambda p: {**p[0], **p[1]})
    return nested | beside


def read_ozonetel(payload: Any) -> object:
    """As the provider reads a 2xx reply: its status, then a success's fields (a vendor's error is returned)."""
    return reply_error(payload, "aht") or parse_aht_reply(payload, Target("agent", "a1"), "aht")


def near_ozonetel_token() -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {}, optional={"token": scalar() | st.just("tok"), "status": scalar(), "message": scalar(), "data": scalar()}
    )


PARSERS: list[tuple[str, Callable[[Any], object], st.SearchStrategy[Any]]] = [
    ("genesys", lambda p: parse_aggregates(p, ["media_type", "queue", "agent"]), near_genesys()),
    (
        "liveperson",
        # The provider hands parse_engactivity the body's bytes (NaN, which JSON cannot hold, is "not JSON").
        lambda p: parse_engactivity(json.dumps(p).encode(), Selection(group_by=("queue", "agent")), START, END),
        near_liveperson(),
    ),
    ("koreai", lambda p: parse_callvolume([p], START, END, Rules(bucket=900)), near_koreai()),
    (
        "ozonetel",
        read_ozonetel,
        near_ozonetel() | st.dictionaries(st.text(max_size=12), JSON, max_size=4) | JSON,
    ),
    ("ozonetel-token", lambda p: parse_token_reply(p, "token"), near_ozonetel_token() | JSON),
    ("koreai-bytes", koreai_from_bytes, near_koreai()),
]


@pytest.mark.parametrize(("name", "parse", "strategy"), PARSERS, ids=[p[0] for p in PARSERS])
def test_only_provider_errors_escape_the_parser(
    name: str, parse: Callable[[Any], object], strategy: st.SearchStrategy[Any]
) -> None:
    @settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(strategy)
    def check(payload: Any) -> None:
        try:
            result = parse(payload)
        except ProviderError:
            return
        assert_sane(result)

    check()


@pytest.mark.parametrize("name", ["ozonetel", "ozonetel-token"])
def test_every_malformed_ozonetel_reply_is_named_by_its_json_path(name: str) -> None:
    """Issue 16: an error about a reply's shape says where in the reply it is; a vendor's error says its words."""
    _, parse, strategy = next(p for p in PARSERS if p[0] == name)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(strategy)
    def check(payload: Any) -> None:
        try:
            parse(payload)
        except ReplyError as exc:  # the vendor's own words, which have no path to name
            assert exc.problem is not Problem.MALFORMED, str(exc)
        except ProviderError as exc:
            assert " - at `$" in str(exc), str(exc)

    check()


# --- from the vendor's JSON to the scraper's bytes -------------------------------------------------------------
# Replies of the right shape, so that most get through the parser, with hostile leaves: any text (lone surrogates,
# control characters, quotes, backslashes, thousands of characters) where ids and media types go, and any number.

TEXT = st.text(
    st.characters(exclude_categories=())
    | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
    | st.characters(max_codepoint=0x9F)
    | st.sampled_from('"\\\n'),
    max_size=12,
) | st.sampled_from(["bad\ud800name", "x" * 1500])
NUMBER = st.integers(min_value=0, max_value=10**6) | st.floats(min_value=0, max_value=1e15) | HOSTILE_NUMBERS


def genesys_reply() -> st.SearchStrategy[Any]:
    def interval(t: int) -> str:
        return f"{isoformat_z(t)}/{isoformat_z(t + 1800)}"

    stats = st.fixed_dictionaries({"sum": NUMBER, "count": NUMBER})
    metric = st.fixed_dictionaries({"metric": st.sampled_from(["tHandle", "tAcw", "nOffered"]), "stats": stats})
    entry = st.fixed_dictionaries(
        {"interval": st.sampled_from([START - 1800, START]).map(interval), "metrics": st.lists(metric, max_size=3)}
    )
    group = st.fixed_dictionaries({"mediaType": TEXT, "queueId": TEXT, "userId": TEXT})
    result = st.fixed_dictionaries({"group": group, "data": st.lists(entry, max_size=2)})
    return st.fixed_dictionaries({"results": st.lists(result, max_size=3)})


def liveperson_reply() -> st.SearchStrategy[Any]:
    def data(number: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        metrics = st.fixed_dictionaries({"totalHandlingTime": number, "totalInteractiveChats": number})
        # Text JSON can carry: msgspec refuses a lone surrogate's escape anywhere in a body as "not JSON", which
        # would fail most replies (test_liveperson_msgspec.py); ids that are no long never reach a label anyway.
        ids = (
            st.sampled_from(["3", "-1", "8\n", "9" * 30])
            | st.integers(-(10**18), 10**18).map(str)
            | TEXT.map(well_formed)
        )
        agents = st.dictionaries(ids, metrics, max_size=2)
        skills = st.dictionaries(ids, st.fixed_dictionaries({"metricsPerAgent": agents}), max_size=2)
        return st.fixed_dictionaries({"skillsMetricsPerAgent": st.fixed_dictionaries({"metricsPerSkill": skills})})

    # Every interval of the span, and the newest one still filling: a reply the parser takes as whole. Hostile
    # numbers in the last closed interval only: one bad figure anywhere fails the whole reply.
    ends = range(START + 300, END + 301, 300)
    cells = [data(NUMBER if t == END else st.integers(0, 10**6)) for t in ends]
    return st.tuples(*cells).map(
        lambda cells: {
            "metricsByIntervals": [{"timestamp": t * 1000, "metricsData": c} for t, c in zip(ends, cells, strict=True)]
        }
    )


def koreai_reply() -> st.SearchStrategy[Any]:
    start = st.sampled_from(range(START, END, 900))
    record = start.flatmap(
        lambda t: st.fixed_dictionaries(
            {
                "intervalStartTimeStamp": st.just(isoformat_z(t)),
                "intervalEndTimeStamp": st.just(isoformat_z(t + 900)),
                "queueId": TEXT,
                "queueName": TEXT,
                "source": TEXT,
                # Hostile numbers in two figures, plain ones in the rest: a record with one bad figure fails whole.
                **{key: st.integers(0, 10**6) for key in KOREAI_FIGURES},
                "conversationHandleTime": NUMBER,
                "completedContacts": NUMBER,
            }
        )
    )
    return st.fixed_dictionaries({"hasMore": st.just(False), "CallVolumeUpdate": st.lists(record, max_size=4)})


KOREAI_FIGURES = [
    "conversationHandleTime",
    "conversationTalkTime",
    "holdDuration",
    "acwDuration",
    "offeredContacts",
    "answeredContacts",
    "abandonedContacts",
    "completedContacts",
]

# Each bucket parser: its bucket, and replies of its shape.
PIPELINES: list[tuple[str, Callable[[Any], object], int, st.SearchStrategy[Any]]] = [
    ("genesys", PARSERS[0][1], 1800, genesys_reply()),
    ("liveperson", PARSERS[1][1], 300, liveperson_reply()),
    ("koreai", PARSERS[2][1], 900, koreai_reply()),
    ("koreai-bytes", koreai_from_bytes, 900, koreai_reply()),
]


@pytest.mark.parametrize(("name", "parse", "bucket", "strategy"), PIPELINES, ids=[p[0] for p in PIPELINES])
def test_whatever_a_parser_lets_through_the_store_keeps_and_the_exposition_renders(
    name: str, parse: Callable[[Any], object], bucket: int, strategy: st.SearchStrategy[Any]
) -> None:
    """Only a ProviderError (one line, the poll fails) may stop a reply on its way to /metrics: never an
    OverflowError in the store's conversion or an encoding error in the render. And what comes out is a valid
    exposition, with a healthy source beside it, and no negative or non-finite figure."""
    rendered = []

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(strategy)
    def check(payload: Any) -> None:
        store = SourceStore(bucket=bucket, windows=[Duration.parse("1h")], fields=frozenset(Field))
        try:
            buckets = parse(payload)
            assert isinstance(buckets, list)
            store.replace(START - 3600, END, buckets)
        except ProviderError:
            return
        hostile = SourceView(SourceHealth(name, "genesys", 3, up=True, polled=True), store.snapshot(END, Names()))
        healthy = SourceView(SourceHealth("fine", "genesys", 3, up=True, polled=True), Snapshot(END, frozenset(), {}))
        text = render([hostile, healthy]).text.decode("utf-8")  # strict UTF-8
        for family in text_string_to_metric_families(text):
            if family.name.startswith("aht_") and not family.name.startswith("aht_exporter"):
                assert all(math.isfinite(s.value) and s.value >= 0 for s in family.samples), family
        assert 'aht_exporter_source_up{provider="genesys",source="fine"} 1.0' in text
        rendered.append(bool(buckets))

    check()
    assert sum(rendered) >= 5, "the replies are shaped to get through: many should"
