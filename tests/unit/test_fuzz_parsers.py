"""Parsers under fuzzing: arbitrary JSON-like values in, buckets or ProviderError out, nothing else."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aht_exporter.model import AverageUpdate, Bucket, ProviderError
from aht_exporter.providers.genesys import parse_aggregates
from aht_exporter.providers.koreai import Rules, parse_callvolume
from aht_exporter.providers.liveperson import Selection, parse_engactivity
from aht_exporter.providers.ozonetel import Reading, Target, parse_aht_reply

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)


def scalar() -> st.SearchStrategy[Any]:
    return st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30) | st.just([]) | st.just({})


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
            assert all(math.isfinite(v) for v in item.values.values()), item
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


def near_ozonetel() -> st.SearchStrategy[Any]:
    message = st.fixed_dictionaries(
        {},
        optional={
            "AgentID": scalar(),
            "AgentName": scalar(),
            "AHT": st.sampled_from(["00:02:37", "1:00:00", "25:61:99", "", "x"]) | scalar(),
        },
    )
    return st.fixed_dictionaries(
        {},
        optional={"status": st.sampled_from(["success", "error", "False"]) | scalar(), "message": message | scalar()},
    )


PARSERS: list[tuple[str, Callable[[Any], object], st.SearchStrategy[Any]]] = [
    ("genesys", lambda p: parse_aggregates(p, ["media_type", "queue", "agent"]), near_genesys()),
    (
        "liveperson",
        lambda p: parse_engactivity(p, Selection(group_by=("queue", "agent")), START, END),
        near_liveperson(),
    ),
    ("koreai", lambda p: parse_callvolume([p], START, END, Rules(bucket=900)), near_koreai()),
    (
        "ozonetel",
        # The provider hands parse_aht_reply the reply object (a non-object reply is refused before it).
        lambda p: parse_aht_reply(p, Target("agent", "a1")),
        near_ozonetel() | st.dictionaries(st.text(max_size=12), JSON, max_size=4),
    ),
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
