"""Shared test helpers: fixture loading, a recording sleep, exposition parsing."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from aht_exporter.model import Bucket
from aht_exporter.providers.genesys import parse_aggregates_json
from aht_exporter.providers.koreai import Record, Rules, latest_revisions, parse_page, parse_record, to_buckets

FIXTURES = Path(__file__).parent / "fixtures"

# 2026-03-02 10:07:00 UTC: a poll at this instant with delay 1m works on boundary 10:05.
T0 = 1772445600 + 7 * 60


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def koreai_seed_record(**changes: Any) -> dict[str, Any]:
    """Kore.ai's own sample record (seed 003) with `changes`; a value of `...` leaves the key out."""
    record: dict[str, Any] = copy.deepcopy(fixture("koreai_seed003_response.json")["CallVolumeUpdate"][0])
    for key, value in changes.items():
        if value is ...:
            record.pop(key, None)
        else:
            record[key] = value
    return record


class RecordingSleep:
    """Stands in for asyncio.sleep in retry loops: records the waits, never waits."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_exposition(text: str) -> Series:
    """{(sample name, sorted labels): value} for every sample of a text exposition."""
    out: Series = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def samples(series: Series, name: str, **match: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        labels: v
        for (n, labels), v in series.items()
        if n == name and all(dict(labels).get(k) == want for k, want in match.items())
    }


def mask_scrape_time_values(body: bytes) -> bytes:
    """The body with the value of every process_* and python_gc_* sample replaced by `V`.

    Those families are read anew at each scrape (exposition.ScrapeTail), so two scrapes, or a scrape and
    a body taken after it, differ in their values only: masked, the rest compares byte for byte."""
    return re.sub(rb"(?m)^((?:process|python_gc)_\S*) \S+$", rb"\1 V", body)


class FixedScrapeFamilies:
    """A stand-in for the process and GC collectors whose values never change, for byte-exact bodies."""

    def collect(self) -> list[Metric]:
        cpu = CounterMetricFamily("process_cpu_seconds", "Total user and system CPU time spent in seconds.", 1.25)
        fds = GaugeMetricFamily("process_open_fds", "Number of open file descriptors.", 7.0)
        gc = CounterMetricFamily(
            "python_gc_collections", "Number of times this generation was collected", labels=["generation"]
        )
        for generation in "012":
            gc.add_metric([generation], 10.0 - int(generation))
        return [cpu, fds, gc]


def parse_aggregates(payload: object, group_by: Sequence[str]) -> list[Bucket]:
    """Genesys aggregates, already decoded (a fixture, a test's dict), parsed as the provider parses the bytes."""
    return parse_aggregates_json(json.dumps(payload).encode(), group_by)


def parse_callvolume(payloads: Sequence[object], start: int, end: int, rules: Rules) -> list[Bucket]:
    """Kore.ai pages, already decoded and in order, to the buckets of [start, end), as the provider reads them."""
    records: list[Record] = []
    for payload in payloads:
        page = parse_page(payload, skip=len(records))
        offset = len(records)
        records.extend(parse_record(raw, offset + i, rules) for i, raw in enumerate(page.records))
    return to_buckets(latest_revisions(records), start, end, rules.bucket)
