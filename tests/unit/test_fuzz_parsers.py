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


PARSERS: list[tuple[str, Callable[[Any], object], st.SearchStrategy[Any]]] = [
    ("genesys", lambda p: parse_aggregates(p, ["media_type", "queue", "agent"]), near_genesys()),
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
