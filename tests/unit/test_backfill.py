"""`aht-exporter backfill` against the built-in simulators over loopback, on a virtual clock: the counters it
writes equal the simulator's ground truth over any aligned range, it refuses what cannot be served, it
resumes where a failed run stopped, and it leaves the store so that live counting continues from it."""

from __future__ import annotations

import io
import itertools
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from aht_exporter.backfill import RATE_LIMIT_PAUSE, Backfill, Plan, counter_lag, parse_when
from aht_exporter.clock import FakeClock
from aht_exporter.config import Config
from aht_exporter.model import MICRO, Bucket, ConfigError, Labels
from aht_exporter.simulator.demo import Demo
from aht_exporter.simulator.faults import Fault
from aht_exporter.simulator.genesys import GenesysSimulator
from aht_exporter.state import StateStore

DAY = 86400
NOW = parse_when("2026-11-20T02:00:00Z", "now")
FROM = parse_when("2026-11-18", "--from")
TO = parse_when("2026-11-19", "--to")


@pytest_asyncio.fixture
async def demo() -> AsyncIterator[tuple[Demo, Config]]:
    demo = Demo(FakeClock(NOW))
    config = await demo.start()
    try:
        yield demo, config
    finally:
        await demo.stop()


def samples(text: str) -> dict[tuple[str, Labels], list[tuple[float, float]]]:
    """Every series' (timestamp, value) samples, parsed by prometheus_client's strict OpenMetrics parser."""
    out: dict[tuple[str, Labels], list[tuple[float, float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):  # type: ignore[no-untyped-call]
        assert family.type == "counter"
        for s in family.samples:
            assert s.timestamp is not None
            out[(s.name, tuple(sorted(s.labels.items())))].append((float(s.timestamp), s.value))
    return out


SAMPLE = re.compile(r"^(\w+)\{(.*)\} (\S+) (\d+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def quick_samples(text: str) -> dict[tuple[str, Labels], list[tuple[float, float]]]:
    """As `samples`, read with a regular expression: these files have hundreds of thousands of lines, and
    one test reads them with the strict parser already."""
    out: dict[tuple[str, Labels], list[tuple[float, float]]] = defaultdict(list)
    for line in text.splitlines():
        if m := SAMPLE.match(line):
            labels = tuple(sorted(LABEL.findall(m[2])))
            out[(m[1], labels)].append((float(m[4]), float(m[3])))
    return out


async def no_sleep(_: float) -> None:
    """Retries back off without waiting: the simulators' faults are immediate."""


def at(series: list[tuple[float, float]], t: float) -> float:
    """What `metric @ t` returns: the newest sample at or before t, within Prometheus' 5-minute lookback."""
    seen = [v for ts, v in series if t - 300 < ts <= t]
    assert seen, f"no sample within 5 minutes before {t}"
    return seen[-1]


def backfill(
    config: Config, tmp_path: Path, state: StateStore, only: str | None = "demo-genesys", start: int = FROM
) -> Backfill:
    return Backfill(
        config,
        start,
        TO,
        tmp_path / "history.om",
        state,
        only=only,
        clock=FakeClock(NOW),
        sleep=no_sleep,
        progress_stream=io.StringIO(),
    )


@pytest.mark.asyncio
async def test_backfilled_counters_are_the_ground_truth_over_every_aligned_range(
    demo: tuple[Demo, Config], tmp_path: Path
) -> None:
    sim, config = demo
    assert await backfill(config, tmp_path, StateStore(tmp_path / "data")).run() == 0
    series = samples((tmp_path / "history.om").read_text())
    source = next(s for s in config.sources if s.name == "demo-genesys")
    lag = counter_lag(source)
    genesys = sim.simulators["genesys"]
    assert isinstance(genesys, GenesysSimulator)
    for a, b in ((FROM, FROM + 3600), (FROM + 5 * 3600, FROM + 13 * 3600), (FROM + 1800, TO), (TO - 1800, TO)):
        # 30-minute buckets (demo-genesys): exact over any range of whole buckets
        truth = genesys.truth(a, b, ["media_type", "queue"], as_of=NOW)
        handled: dict[Labels, float] = {}
        handle: dict[Labels, float] = {}
        for (name, labels), points in series.items():
            key = tuple((k, v) for k, v in labels if k in ("media_type", "queue"))
            delta = at(points, b + lag) - at(points, a + lag)
            if name == "aht_contacts_handled_total":
                handled[key] = delta
            elif name == "aht_handle_time_seconds_total":
                handle[key] = delta
        assert {k: v for k, v in handled.items() if v} == {
            k: float(t.contacts_handled) for k, t in truth.items() if t.contacts_handled
        }, (a, b)
        for k, t in truth.items():
            assert round(handle[k] * 1000) == round(t.handle_seconds * 1000), (k, a, b)


@pytest.mark.asyncio
async def test_every_series_starts_at_zero_and_samples_are_never_in_the_future(
    demo: tuple[Demo, Config], tmp_path: Path
) -> None:
    _, config = demo
    assert await backfill(config, tmp_path, StateStore(None)).run() == 0
    for points in quick_samples((tmp_path / "history.om").read_text()).values():
        assert points[0][1] == 0.0
        assert [t for t, _ in points] == sorted({t for t, _ in points})
        assert all(v2 >= v1 for (_, v1), (_, v2) in itertools.pairwise(points))  # counters
        assert points[-1][0] <= NOW


@pytest.mark.asyncio
async def test_the_store_is_left_for_the_live_exporter_to_continue_the_counters(
    demo: tuple[Demo, Config], tmp_path: Path
) -> None:
    _, config = demo
    state = StateStore(tmp_path / "data")
    run = backfill(config, tmp_path, state)
    plans = run.plan()
    key = plans[0].identity
    await plans[0].provider.aclose()
    assert await run.run() == 0
    series = quick_samples((tmp_path / "history.om").read_text())
    source = plans[0].config
    loaded = state.load(source.name, key)
    assert loaded is not None
    assert loaded.final_until == TO and loaded.fetched_until == TO
    assert min(loaded.buckets) >= TO - source.longest_window and max(loaded.buckets) < TO
    last = {(name, labels): points[-1][1] for (name, labels), points in series.items()}
    assert len(loaded.totals) == len(last) // len(plans[0].provider.fields)
    for labels, totals in loaded.totals.items():
        full = tuple(sorted({**dict(labels), "source": "demo-genesys", "provider": "genesys"}.items()))
        for f, v in totals.items():
            assert last[(f"aht_{f}_total", full)] == v / MICRO
    # The store now counts the source: a second backfill of it is refused.
    with pytest.raises(ConfigError, match="already counted live"):
        backfill(config, tmp_path, state).plan()


@pytest.mark.asyncio
async def test_a_failed_run_resumes_at_the_chunk_it_stopped_at(demo: tuple[Demo, Config], tmp_path: Path) -> None:
    sim, config = demo
    genesys = sim.simulators["genesys"]
    assert isinstance(genesys, GenesysSimulator)
    state = StateStore(tmp_path / "data")
    first = backfill(config, tmp_path, state, start=FROM - DAY)
    # The first day's chunk works; every request after it fails (503 until the poll gives up).
    calls = {"n": 0}
    original = first.plan

    def plan_and_break() -> list[Plan]:
        plans = original()
        fetch = plans[0].provider.fetch

        async def once_then_fail(start: int, end: int) -> list[Bucket]:
            calls["n"] += 1
            if calls["n"] > 1:
                genesys.faults.inject(Fault.HTTP_503)
            return await fetch(start, end)

        plans[0].provider.fetch = once_then_fail  # type: ignore[method-assign]  # deliberately patched
        return plans

    first.plan = plan_and_break  # type: ignore[method-assign]  # deliberately patched
    assert await first.run() == 1
    assert not (tmp_path / "history.om").exists()
    genesys.faults.clear()
    requests_before = sum(genesys.requests.values())
    second = backfill(config, tmp_path, state, start=FROM - DAY)
    assert await second.run() == 0
    assert isinstance(second.progress_stream, io.StringIO)
    assert "resuming at 2026-11-18T00:00:00.000Z" in second.progress_stream.getvalue()
    resumed_requests = sum(genesys.requests.values()) - requests_before
    full = backfill(config, tmp_path / "x", StateStore(None), start=FROM - DAY)
    (tmp_path / "x").mkdir()
    requests_before = sum(genesys.requests.values())
    assert await full.run() == 0
    assert resumed_requests < sum(genesys.requests.values()) - requests_before  # only the second day again
    assert (tmp_path / "history.om").read_text() == (tmp_path / "x" / "history.om").read_text()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("start", "end", "only", "error"),
    [
        (TO, FROM, None, r"--from \(2026-11-19T00:00:00.000Z\) must be before --to"),
        (FROM, NOW, "demo-genesys", r"--to \(2026-11-20T02:00:00.000Z\) is after demo-genesys's newest final bucket"),
        (FROM, TO, "demo-ozonetel", r"demo-ozonetel \(ozonetel\): the provider serves no history"),
        (FROM, TO, "demo-liveperson", r"further back than demo-liveperson \(liveperson\) serves: .* last 24h"),
        (FROM + 300, TO, "demo-genesys", r"--from \(2026-11-18T00:05:00.000Z\) is not a multiple"),
        (FROM, TO, "nope", r"--source: no source is named 'nope'"),
    ],
)
async def test_what_cannot_be_served_is_refused_before_any_request(
    demo: tuple[Demo, Config], tmp_path: Path, start: int, end: int, only: str | None, error: str
) -> None:
    sim, config = demo
    run = Backfill(config, start, end, tmp_path / "o.om", StateStore(None), only=only, clock=FakeClock(NOW))
    with pytest.raises(ConfigError, match=error):
        run.plan()
    assert sum(sum(s.requests.values()) for s in sim.simulators.values() if hasattr(s, "requests")) == 0


def test_dates_and_times() -> None:
    assert parse_when("2026-11-01", "--from") == 1793491200
    assert parse_when("2026-11-01T06:00:00Z", "--from") == 1793491200 + 6 * 3600
    with pytest.raises(ConfigError, match="has no time zone"):
        parse_when("2026-11-01T06:00:00", "--from")
    with pytest.raises(ConfigError, match=r"--to: 'yesterday' is not a date"):
        parse_when("yesterday", "--to")


@pytest.mark.asyncio
async def test_a_rate_limit_the_client_cannot_wait_out_is_waited_out_and_the_history_is_still_exact(
    demo: tuple[Demo, Config], tmp_path: Path
) -> None:
    """Eight 429s in a row: more than the client's retries within a request. The backfill waits (here on a
    stand-in sleep) and asks again; the counters are still the ground truth."""
    sim, config = demo
    genesys = sim.simulators["genesys"]
    assert isinstance(genesys, GenesysSimulator)
    genesys.faults.inject(Fault.RATE_LIMITED, count=8)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    progress = io.StringIO()
    run = Backfill(
        config,
        FROM,
        TO,
        tmp_path / "g.om",
        StateStore(None),
        only="demo-genesys",
        clock=FakeClock(NOW),
        sleep=sleep,
        progress_stream=progress,
    )
    assert await run.run() == 0, progress.getvalue()
    assert "demo-genesys: rate limited (" in progress.getvalue()
    assert RATE_LIMIT_PAUSE in waits
    series = quick_samples((tmp_path / "g.om").read_text())
    source = next(s for s in config.sources if s.name == "demo-genesys")
    lag = counter_lag(source)
    a, b = FROM + 3600, TO - 1800
    truth = genesys.truth(a, b, ["media_type", "queue"], as_of=NOW)
    handled = {
        tuple((k, v) for k, v in labels if k in ("media_type", "queue")): at(points, b + lag) - at(points, a + lag)
        for (name, labels), points in series.items()
        if name == "aht_contacts_handled_total"
    }
    assert {k: v for k, v in handled.items() if v} == {
        k: float(t.contacts_handled) for k, t in truth.items() if t.contacts_handled
    }


@pytest.mark.asyncio
async def test_an_output_that_cannot_be_written_is_one_line_and_the_fetched_history_is_kept(
    demo: tuple[Demo, Config], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim, config = demo
    genesys = sim.simulators["genesys"]
    assert isinstance(genesys, GenesysSimulator)
    state = StateStore(tmp_path / "data")
    run = Backfill(
        config,
        FROM,
        TO,
        tmp_path / "missing-dir" / "h.om",
        state,
        only="demo-genesys",
        clock=FakeClock(NOW),
        sleep=no_sleep,
        progress_stream=io.StringIO(),
    )
    assert await run.run() == 1
    err = capsys.readouterr().err
    assert err.startswith("aht-exporter backfill: [Errno 2] No such file or directory") and err.count("\n") == 1
    assert "run the same command again to resume" in err
    (tmp_path / "missing-dir").mkdir()
    progress = io.StringIO()
    again = Backfill(
        config,
        FROM,
        TO,
        tmp_path / "missing-dir" / "h.om",
        state,
        only="demo-genesys",
        clock=FakeClock(NOW),
        sleep=no_sleep,
        progress_stream=progress,
    )
    asked = sum(genesys.requests.values())
    assert await again.run() == 0
    assert "resuming at 2026-11-19T00:00:00.000Z" in progress.getvalue()  # every chunk was fetched and kept
    assert sum(genesys.requests.values()) == asked  # so nothing is asked again
    assert quick_samples((tmp_path / "missing-dir" / "h.om").read_text())


@pytest.mark.asyncio
async def test_without_source_what_cannot_be_served_is_skipped_with_a_line_and_the_rest_is_backfilled(
    demo: tuple[Demo, Config], tmp_path: Path
) -> None:
    _, config = demo
    progress = io.StringIO()
    run = Backfill(
        config,
        TO - DAY,
        TO,
        tmp_path / "all.om",
        StateStore(None),
        clock=FakeClock(NOW),
        sleep=no_sleep,
        progress_stream=progress,
    )
    assert await run.run() == 0, progress.getvalue()
    said = progress.getvalue()
    assert "backfill: skipped demo-ozonetel (ozonetel): the provider serves no history, only its last 2h\n" in said
    assert "backfill: skipped --from (2026-11-18T00:00:00.000Z) is further back than demo-liveperson" in said
    sources = {dict(labels)["source"] for _, labels in quick_samples((tmp_path / "all.om").read_text())}
    assert sources == {"demo-genesys", "demo-genesys-agents", "demo-koreai", "demo-amazon-connect"}
