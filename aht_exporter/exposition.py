"""Metric families from store snapshots and health, rendered once per poll into cached bytes.

Scrapes never call a provider and never render: they pick one of the four cached bodies (text or
OpenMetrics, identity or gzip), so a scrape costs the same at 100 series or 100,000.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest as generate_text
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from aht_exporter import __version__
from aht_exporter.health import SourceHealth
from aht_exporter.model import Field
from aht_exporter.store import Snapshot

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

_SERVED = "Served from the last poll; scrapes never call the provider."

FIELD_HELP: dict[Field, str] = {
    Field.HANDLE_TIME: "Total handle time of the contacts handled in the window, in seconds.",
    Field.CONTACTS_HANDLED: "Contacts handled in the window.",
    Field.TALK_TIME: "Total talk time of the contacts handled in the window, in seconds.",
    Field.HOLD_TIME: "Total hold time of the contacts handled in the window, in seconds.",
    Field.ACW_TIME: "Total after-contact work time of the contacts handled in the window, in seconds.",
    Field.CONTACTS_OFFERED: "Contacts offered in the window.",
    Field.CONTACTS_ANSWERED: "Contacts answered in the window.",
    Field.CONTACTS_ABANDONED: "Contacts abandoned in the window.",
}


@dataclass(frozen=True, slots=True)
class SourceView:
    """One source as the exposition sees it."""

    health: SourceHealth
    snapshot: Snapshot | None


@dataclass(frozen=True, slots=True)
class Rendered:
    text: bytes
    text_gzip: bytes
    openmetrics: bytes
    openmetrics_gzip: bytes

    def body(self, *, openmetrics: bool, gzipped: bool) -> tuple[bytes, str]:
        if openmetrics:
            return (self.openmetrics_gzip if gzipped else self.openmetrics), OPENMETRICS_CONTENT_TYPE
        return (self.text_gzip if gzipped else self.text), TEXT_CONTENT_TYPE


class ExporterCollector:
    """A client_python custom collector over an immutable list of source views.

    Series that vanish upstream vanish here too: nothing is registered, everything is yielded anew.
    """

    def __init__(self, views: Sequence[SourceView]) -> None:
        self._views = views

    def collect(self) -> Iterator[Metric]:
        live = [v for v in self._views if v.snapshot is not None and not v.health.stale]
        yield from data_families(live)
        yield from health_families([v.health for v in self._views])


def data_families(views: Iterable[SourceView]) -> Iterator[Metric]:
    aht = Metric(
        "aht_seconds",
        "Average handle time over the window: handle time / contacts handled, in seconds; absent when "
        f"no contact was handled. {_SERVED}",
        "gauge",
    )
    per_field = {f: Metric(f"aht_{f.value}", f"{FIELD_HELP[f]} {_SERVED}", "gauge") for f in Field}
    # The SPEC types the _info series as gauges of value 1.
    queue_info = Metric("aht_queue_info", f"Display name of a queue (skill, campaign); value 1. {_SERVED}", "gauge")
    agent_info = Metric("aht_agent_info", f"Display name of an agent; value 1. {_SERVED}", "gauge")
    for view in views:
        snap = view.snapshot
        assert snap is not None
        source = view.health.source
        base = {"source": source, "provider": view.health.provider}
        for window, groups in snap.windows.items():
            for labels, totals in groups.items():
                series = {**base, "window": window, **dict(labels)}
                for f in snap.fields:
                    per_field[f].add_sample(per_field[f].name, series, totals.get(f, 0.0))
                handled = totals.get(Field.CONTACTS_HANDLED, 0.0)
                if handled > 0:
                    aht.add_sample("aht_seconds", series, totals.get(Field.HANDLE_TIME, 0.0) / handled)
        for window, averages in snap.averages.items():
            for labels, value in averages.items():
                aht.add_sample("aht_seconds", {**base, "window": window, **dict(labels)}, value)
        for queue, name in snap.names.queues.items():
            queue_info.add_sample(queue_info.name, {"source": source, "queue": queue, "queue_name": name}, 1)
        for agent, name in snap.names.agents.items():
            agent_info.add_sample(agent_info.name, {"source": source, "agent": agent, "agent_name": name}, 1)
    # Families no source fills are left out rather than shown empty.
    yield from (m for m in (aht, *per_field.values(), queue_info, agent_info) if m.samples)


def health_families(healths: Sequence[SourceHealth]) -> Iterator[Metric]:
    names = ["source", "provider"]
    up = GaugeMetricFamily("aht_exporter_source_up", "1 if the source's last poll succeeded, else 0.", labels=names)
    last = GaugeMetricFamily(
        "aht_exporter_last_success_timestamp_seconds",
        "Unix time of the source's last successful poll.",
        labels=names,
    )
    data_end = GaugeMetricFamily(
        "aht_exporter_data_end_timestamp_seconds",
        "Unix time of the end of the newest closed bucket the source's data includes.",
        labels=names,
    )
    duration = HistogramMetricFamily(
        "aht_exporter_poll_duration_seconds", "Wall time of each poll, in seconds.", labels=names
    )
    polls = CounterMetricFamily("aht_exporter_polls", "Polls, by result.", labels=[*names, "result"])
    requests = CounterMetricFamily(
        "aht_exporter_api_requests",
        "HTTP requests to the provider, by status code (error: no response).",
        labels=[*names, "status"],
    )
    limited = CounterMetricFamily(
        "aht_exporter_rate_limited",
        'Provider responses that said "slow down" (429 or the provider\'s own form).',
        labels=names,
    )
    dropped = CounterMetricFamily(
        "aht_exporter_series_dropped", "Data series dropped by the source's max_series limit.", labels=names
    )
    for h in healths:
        key = [h.source, h.provider]
        up.add_metric(key, 1.0 if h.up else 0.0)
        if h.last_success is not None:
            last.add_metric(key, h.last_success)
        if h.data_end is not None:
            data_end.add_metric(key, float(h.data_end))
        duration.add_metric(key, buckets=h.histogram_buckets(), sum_value=h.duration_sum)
        for result in ("success", "error"):
            polls.add_metric([*key, result], float(h.polls[result]))
        for status in sorted(h.api_requests):
            requests.add_metric([*key, status], float(h.api_requests[status]))
        limited.add_metric(key, float(h.rate_limited))
        dropped.add_metric(key, float(h.series_dropped))
    yield from (up, last, data_end, duration, polls, requests, limited, dropped)
    info = GaugeMetricFamily("aht_exporter_build_info", "Build information; value 1.", labels=["version"])
    info.add_metric([__version__], 1.0)
    yield info


def render(views: Sequence[SourceView]) -> Rendered:
    """Render all four bodies. CPU-bound: call it off the event loop."""
    collector = ExporterCollector(views)
    text = generate_text(collector)
    om = generate_openmetrics(collector)  # type: ignore[no-untyped-call]
    # Level 6 is zlib's default trade-off; these bodies compress about 10x.
    return Rendered(text, gzip.compress(text, 6), om, gzip.compress(om, 6))
