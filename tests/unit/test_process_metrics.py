"""process_* and python_gc_* are read at each scrape, after the cached part of the body, in every body.

The data and health parts are rendered once per poll; the few families of the process itself (CPU
seconds, memory, file descriptors, start time) and of the garbage collector are rendered by
prometheus_client at every scrape and finish each body: the gzip bodies as ONE gzip stream.
"""

from __future__ import annotations

import gzip
import logging
import resource
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from prometheus_client import ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from aht_exporter.exposition import (
    OPENMETRICS_CONTENT_TYPE,
    Rendered,
    ScrapeTail,
    SourceView,
    default_scrape_collectors,
    render,
)
from aht_exporter.health import SourceHealth
from aht_exporter.model import Field, Sums, make_labels
from aht_exporter.store import Snapshot
from tests.helpers import FixedScrapeFamilies, mask_scrape_time_values
from tests.prometheus_bin import require

PROCESS_FAMILIES = {
    "process_cpu_seconds",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
}
GC_FAMILIES = {"python_gc_objects_collected", "python_gc_objects_uncollectable", "python_gc_collections"}
BODIES = [(False, False), (False, True), (True, False), (True, True)]  # (openmetrics, gzipped)


def view(agents: int = 50) -> SourceView:
    fields = frozenset({Field.HANDLE_TIME, Field.CONTACTS_HANDLED})
    groups: dict[tuple[tuple[str, str], ...], Sums] = {
        make_labels(agent=f"agent-{i:05d}"): Sums(handle_time_seconds=100.0 + i, contacts_handled=1.0 + i % 7)
        for i in range(agents)
    }
    health = SourceHealth("g1", "genesys", 3, up=True, polled=True)
    return SourceView(health, Snapshot(data_end=1772445600, fields=fields, windows={"30m": groups, "1h": groups}))


def scrape(rendered: Rendered, *, openmetrics: bool, gzipped: bool) -> str:
    """One body as a scraper decodes it."""
    raw = rendered.whole(openmetrics=openmetrics, gzipped=gzipped)
    return (gzip.decompress(raw) if gzipped else raw).decode()


def families(body: str, *, openmetrics: bool) -> dict[str, Metric]:
    parsed = parse_openmetrics(body) if openmetrics else parse_text(body)  # type: ignore[no-untyped-call]
    return {f.name: f for f in parsed}


def value(body: str, sample: str, *, openmetrics: bool) -> float:
    (found,) = [
        s.value for f in families(body, openmetrics=openmetrics).values() for s in f.samples if s.name == sample
    ]
    return found


def test_process_and_gc_families_end_all_four_bodies() -> None:
    rendered = render([view()])
    for openmetrics, gzipped in BODIES:
        body = scrape(rendered, openmetrics=openmetrics, gzipped=gzipped)
        got = families(body, openmetrics=openmetrics)
        assert set(got) >= PROCESS_FAMILIES | GC_FAMILIES, (openmetrics, gzipped)
        assert {"aht_seconds", "aht_exporter_source_up", "aht_exporter_build_info"} <= set(got)
        assert "python_info" not in got  # aht_exporter_build_info carries python_version
        assert got["process_cpu_seconds"].type == "counter"
        assert got["process_resident_memory_bytes"].type == "gauge"
        # After the cached part, whose last family is build_info: the data and health stay first.
        assert body.index("# HELP aht_exporter_build_info") < body.index("# HELP process_")
        if openmetrics:
            assert body.endswith("# EOF\n") and body.count("# EOF") == 1
        else:
            assert "# EOF" not in body
        now = time.time()
        start = value(body, "process_start_time_seconds", openmetrics=openmetrics)
        assert now - 86400 < start <= now
        assert value(body, "process_max_fds", openmetrics=openmetrics) == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert value(body, "process_resident_memory_bytes", openmetrics=openmetrics) > 10 * 2**20
        assert value(body, "process_open_fds", openmetrics=openmetrics) >= 3


def burn_cpu(seconds: float) -> None:
    """Use this much CPU time (bounded: a minute of wall time at most, on a machine however busy)."""
    started, deadline = time.process_time(), time.monotonic() + 60
    while time.process_time() - started < seconds and time.monotonic() < deadline:
        sum(i * i for i in range(10_000))


@pytest.mark.parametrize(("openmetrics", "gzipped"), BODIES)
def test_two_scrapes_without_a_poll_read_the_process_as_it_is_at_each(openmetrics: bool, gzipped: bool) -> None:
    rendered = render([view()])  # one render: no poll happens between the scrapes
    cpu = "process_cpu_seconds_total"
    first = scrape(rendered, openmetrics=openmetrics, gzipped=gzipped)
    burn_cpu(0.2)
    with ExitStack() as files:
        for _ in range(25):
            files.enter_context(tempfile.TemporaryFile())
        second = scrape(rendered, openmetrics=openmetrics, gzipped=gzipped)
    third = scrape(rendered, openmetrics=openmetrics, gzipped=gzipped)

    def read(body: str, sample: str) -> float:
        return value(body, sample, openmetrics=openmetrics)

    assert read(second, cpu) >= read(first, cpu) + 0.1  # /proc counts in ticks of 10 ms
    assert read(second, "process_open_fds") >= read(first, "process_open_fds") + 25
    assert read(third, "process_open_fds") <= read(second, "process_open_fds") - 25
    assert read(third, "process_start_time_seconds") == read(first, "process_start_time_seconds")
    # The data part is the same in all three: served from the one render.
    cached = first[: first.index("# HELP process_")]
    assert second.startswith(cached) and third.startswith(cached)


def test_a_scrape_reuses_the_cached_parts_and_adds_only_its_tail() -> None:
    rendered = render([view(6000)])  # bodies of several parts
    for openmetrics, gzipped in BODIES:
        cached = rendered.openmetrics_format if openmetrics else rendered.text_format
        expected = cached.gzip_parts if gzipped else cached.parts
        parts, _ = rendered.body(openmetrics=openmetrics, gzipped=gzipped)
        assert len(parts) == len(expected) + 1
        assert all(got is part for got, part in zip(parts, expected, strict=False))  # the very objects: no copy
        assert isinstance(parts[-1], bytes) and len(parts[-1]) < 4096  # the tail: a few families, whatever the series


def test_the_gzip_bodies_are_one_gzip_stream_equal_to_the_identity_bodies() -> None:
    rendered = render([view(6000)], ScrapeTail([FixedScrapeFamilies()]))  # values that hold still between bodies
    for openmetrics in (False, True):
        identity = rendered.openmetrics if openmetrics else rendered.text
        raw = rendered.openmetrics_gzip if openmetrics else rendered.text_gzip
        assert len(identity) > 1_000_000 and b"process_open_fds 7.0" in identity
        assert gzip.decompress(raw) == identity
        one = zlib.decompressobj(16 + zlib.MAX_WBITS)
        assert one.decompress(raw) == identity
        assert one.eof and one.unused_data == b""  # a single member, complete, with nothing after it

        # httpx decodes only the first member of a gzip body: all of it must be in that member.
        def serve(_: httpx.Request, raw: bytes = raw) -> httpx.Response:
            return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=raw)

        with httpx.Client(transport=httpx.MockTransport(serve)) as client:
            assert client.get("http://exporter/metrics").content == identity


def test_the_bodies_read_the_same_in_both_encodings_with_the_real_collectors() -> None:
    rendered = render([view()])
    for openmetrics in (False, True):
        identity = scrape(rendered, openmetrics=openmetrics, gzipped=False).encode()
        unzipped = scrape(rendered, openmetrics=openmetrics, gzipped=True).encode()
        # Only the tail's values may move from one scrape to the next.
        assert mask_scrape_time_values(identity) == mask_scrape_time_values(unzipped)
        assert mask_scrape_time_values(identity).count(b"process_") > 6


def help_texts(body: str) -> dict[str, str]:
    """{family: HELP text as written}, counters named without `_total` as OpenMetrics names them."""
    out = {}
    for line in body.splitlines():
        if line.startswith("# HELP "):
            name, _, text = line.removeprefix("# HELP ").partition(" ")
            out[name.removesuffix("_total")] = text
    return out


def test_the_scrape_time_help_texts_read_the_same_in_both_formats() -> None:
    tail = ScrapeTail()
    text, openmetrics = (
        help_texts(tail.render(openmetrics=False).decode()),
        help_texts(tail.render(openmetrics=True).decode()),
    )
    assert set(text) == PROCESS_FAMILIES | GC_FAMILIES
    assert text == openmetrics


def test_promtool_check_metrics_accepts_the_text_body_with_its_tail() -> None:
    promtool = require("promtool")
    body = render([view()]).text
    assert b"process_cpu_seconds_total" in body
    done = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.strip() == b"" and done.stderr.strip() == b"", done.stderr.decode()


class Broken:
    def __init__(self) -> None:
        self.calls = 0

    def collect(self) -> Iterator[Metric]:
        self.calls += 1
        raise OSError("read /proc/self/stat: no such file")


def test_a_failing_collector_is_left_out_logged_once_and_the_body_is_still_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = Broken()
    rendered = render([view()], ScrapeTail([broken, FixedScrapeFamilies()]))
    with caplog.at_level(logging.ERROR):
        for openmetrics, gzipped in BODIES:
            body = scrape(rendered, openmetrics=openmetrics, gzipped=gzipped)
            got = families(body, openmetrics=openmetrics)
            assert {"aht_seconds", "aht_exporter_build_info", "process_open_fds", "python_gc_collections"} <= set(got)
            assert body.count("# EOF") == (1 if openmetrics else 0)
    assert broken.calls == 4
    logged = [r for r in caplog.records if r.getMessage() == "scrape-time metrics left out"]
    assert len(logged) == 1  # once when it starts failing, not at every scrape
    assert logged[0].__dict__["collector"] == "Broken"
    assert "no such file" in logged[0].__dict__["error"]


def test_with_no_proc_the_process_families_are_absent_and_the_body_still_ends_right(tmp_path: Path) -> None:
    """Where there is no /proc (macOS, Windows) ProcessCollector yields nothing: the body has no tail."""
    rendered = render([view()], ScrapeTail([ProcessCollector(proc=str(tmp_path), registry=None)]))
    text = scrape(rendered, openmetrics=False, gzipped=True)
    openmetrics = scrape(rendered, openmetrics=True, gzipped=True)
    assert "process_" not in text and "process_" not in openmetrics
    assert openmetrics.endswith("# EOF\n") and openmetrics.count("# EOF") == 1


def test_the_default_collectors_are_the_process_and_gc_ones_only() -> None:
    names = {f.name for c in default_scrape_collectors() for f in c.collect()}
    assert names == PROCESS_FAMILIES | GC_FAMILIES
    assert render([view()]).body(openmetrics=True, gzipped=True)[1] == OPENMETRICS_CONTENT_TYPE
