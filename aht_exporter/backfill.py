"""`aht-exporter backfill`: history as the `_total` counters would have shown it, for Prometheus' TSDB.

    aht-exporter backfill --config.file=F --from=2026-11-01 --to=2026-11-30 [--source=NAME] --output=FILE

For each source it fetches [from, to) from the provider, a chunk at a time and within the provider's own rate
limit, and writes OpenMetrics with timestamps: each counter at the value a live exporter would have shown at
each moment (the buckets final by then: `timebuckets.final_until`), sampled as a scrape every few minutes would
have. `promtool tsdb create-blocks-from openmetrics FILE DIR` turns it into blocks; the exact-range queries of
docs/exact-ranges.md then read history and live data alike.

Fetched chunks go to the store (`--storage.path`) as they come, so a stopped run resumes where it stopped.
At the end the store holds the source's state as of `to`, so the live exporter started afterwards continues the
counters from the backfilled values instead of from zero. Providers without history (Ozonetel) are refused, as
are spans a provider cannot serve (LivePerson: the last 24 hours) and sources the exporter already counts live.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import httpx

from aht_exporter import timebuckets
from aht_exporter.clock import Clock, SystemClock
from aht_exporter.config import Config, SourceConfig
from aht_exporter.exposition import FIELD_HELP
from aht_exporter.health import SourceHealth
from aht_exporter.httpclient import Sleep
from aht_exporter.model import MICRO, Bucket, ConfigError, Field, Labels, ProviderError, RateLimited
from aht_exporter.pacing import Accounts
from aht_exporter.providers import PROVIDERS
from aht_exporter.providers.base import BucketProvider
from aht_exporter.registry import load_config
from aht_exporter.state import StateStore, identity
from aht_exporter.store import KEY, SourceState, SourceStore
from aht_exporter.timebuckets import closed_until, final_until, floor_to, isoformat_z

log = logging.getLogger(__name__)

FIELD_TOTAL_HELP: dict[Field, str] = {
    f: f"{text.removesuffix(' in the window, in seconds.').removesuffix(' in the window.')}, summed over every final "
    "bucket since counting began (a bucket is added once it is older than refresh)"
    + (", in seconds." if "seconds" in f.value else ".")
    for f, text in FIELD_HELP.items()
}

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_STORAGE = "data/"
CHUNK = 86400  # seconds of history fetched, and saved, at a time (less for a provider that serves less)
SAMPLE_STEP = 290  # seconds between the samples of one counter: under Prometheus' 5-minute lookback
RATE_LIMIT_PAUSE = 60.0  # seconds to wait when a provider still says "slow down" after the client's retries
MAX_PAUSES = 30  # such waits in a row for one chunk before the run stops (and can be resumed)
SETTLE = 10  # seconds after a poll fires before its result is sampled (a poll takes a few seconds)
MARGIN = timebuckets.COUNTER_READ_MARGIN  # seconds before the next poll that the last one's result is sampled


def counter_lag(config: SourceConfig) -> int:
    """`timebuckets.counter_lag` for a source: where its exact ranges are read, and its samples written."""
    return timebuckets.counter_lag(
        bucket=config.bucket_seconds,
        every=config.every.seconds,
        delay=config.delay.seconds,
        refresh=config.refresh_seconds,
        longest_window=config.longest_window,
    )


def _refresh_span(config: SourceConfig) -> int:
    """`refresh` in whole buckets, cut to the longest window: the span every poll re-fetches."""
    return counter_lag(config) - config.every.seconds - config.delay.seconds + MARGIN


def parse_when(text: str, flag: str) -> int:
    """`2026-11-01` (midnight UTC) or an ISO-8601 time with its zone (`2026-11-01T06:00:00Z`)."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not a date (2026-11-01) or a time (2026-11-01T06:00:00Z)") from None
    if when.tzinfo is None:
        if "T" in text or " " in text.strip():
            raise ConfigError(f"{flag}: {text!r} has no time zone: add Z for UTC")
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


@dataclass(frozen=True)
class Plan:
    """One source's backfill: what to fetch, in which chunks, and when its counters move."""

    config: SourceConfig
    provider: BucketProvider[Any]
    start: int
    end: int
    identity: str

    @property
    def name(self) -> str:
        return self.config.name

    def chunks(self, resume_from: int) -> list[tuple[int, int]]:
        size = max(
            self.config.bucket_seconds, floor_to(min(CHUNK, self.config.max_window.seconds), self.config.bucket_seconds)
        )
        return [(s, min(s + size, self.end)) for s in range(resume_from, self.end, size)]

    def polls(self) -> Iterator[tuple[int, int]]:
        """(poll time, end of the final buckets after it) for every poll whose frontier lies in [start, end],
        as the live exporter's polls fire: at multiples of `every` (their `delay` added to the sample times)."""
        cfg = self.config
        every, bucket = cfg.every.seconds, cfg.bucket_seconds
        p = floor_to(self.start + _refresh_span(cfg), every)
        while True:
            frontier = final_until(
                closed_until(p, bucket),
                bucket=bucket,
                longest_window=cfg.longest_window,
                refresh=cfg.refresh_seconds,
            )
            if frontier > self.end:
                return
            if frontier >= self.start:
                yield p, frontier
            p += every

    def sample_times(self, poll: int) -> tuple[int, ...]:
        """When a scrape would have seen this poll's result: just before the next poll fires (the time the
        exact-range queries read, `counter_lag`), and every `SAMPLE_STEP` before that while the result
        stood, so that no instant is further than Prometheus' lookback from a sample."""
        cfg = self.config
        first = poll + cfg.delay.seconds + SETTLE
        last = poll + cfg.every.seconds + cfg.delay.seconds - MARGIN
        return tuple(range(last, first - 1, -SAMPLE_STEP))[::-1]


@dataclass
class Timeline:
    """Each label set's running totals at each poll, kept as the changes only: a label set that is idle for
    days costs nothing per poll."""

    polls: list[tuple[int, int]]
    fields: tuple[Field, ...]
    # per label set: the poll indexes where its totals changed, and each field's value from there (millionths)
    changes: dict[Labels, tuple[array[int], dict[Field, array[int]]]] = field(default_factory=dict)
    totals: dict[Labels, dict[str, int]] = field(default_factory=dict)
    last_seen: dict[Labels, int] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        polls: list[tuple[int, int]],
        fields: Iterable[Field],
        buckets: Iterable[tuple[int, dict[Labels, dict[str, int]]]],
    ) -> Timeline:
        timeline = cls(polls, tuple(sorted(fields)))
        frontiers = [frontier for _, frontier in polls]
        i = 0  # the first poll whose frontier is past the buckets counted so far
        for t, groups in buckets:  # oldest first
            while i < len(frontiers) and frontiers[i] <= t:
                i += 1  # polls before this bucket was final: their totals are those counted so far
            for labels, values in groups.items():
                timeline.last_seen[labels] = t
                totals = timeline.totals.setdefault(labels, dict.fromkeys((KEY[f] for f in timeline.fields), 0))
                for f, v in values.items():
                    totals[f] = totals.get(f, 0) + v
                at, series = timeline.changes.setdefault(labels, (array("q"), {f: array("q") for f in timeline.fields}))
                if at and at[-1] == i:  # another bucket final by the same poll
                    for f in timeline.fields:
                        series[f][-1] = totals[f]
                else:
                    at.append(i)
                    for f in timeline.fields:
                        series[f].append(totals[f])
        return timeline

    def values(self, labels: Labels, f: Field) -> Iterator[int]:
        """The totals after each poll, in millionths, from 0 before the label set's first bucket."""
        at, series = self.changes[labels]
        values = series[f]
        current, k = 0, 0
        for i in range(len(self.polls)):
            while k < len(at) and at[k] <= i:
                current = values[k]
                k += 1
            yield current


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def write_openmetrics(out: TextIO, plans_and_timelines: Sequence[tuple[Plan, Timeline]], now: float) -> int:
    """Every family, every series of it, every sample in time order: OpenMetrics as `promtool tsdb
    create-blocks-from openmetrics` reads it. No sample after `now` (the live exporter's are those).
    Returns the number of samples written."""
    written = 0
    for f in sorted({f for _, t in plans_and_timelines for f in t.fields}):
        name = f"aht_{f.value}"
        out.write(f"# HELP {name} {FIELD_TOTAL_HELP[f]}\n# TYPE {name} counter\n")
        for plan, timeline in plans_and_timelines:
            if f not in timeline.fields:
                continue
            times = [plan.sample_times(p) for p, _ in timeline.polls]
            base = {"source": plan.name, "provider": plan.config.provider}
            for labels in sorted(timeline.changes):
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted({**base, **dict(labels)}.items()))
                lines: list[str] = []
                for at, value in zip(times, timeline.values(labels, f), strict=True):
                    shown = repr(value / MICRO)
                    lines.extend(f"{name}_total{{{text}}} {shown} {t}\n" for t in at if t <= now)
                out.write("".join(lines))
                written += len(lines)
    out.write("# EOF\n")
    return written


class Progress:
    """A bar with an ETA on a terminal; a plain line per chunk (at most one each 10 s) otherwise."""

    def __init__(self, total: int, stream: TextIO, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.total = max(1, total)
        self.done = 0
        self.stream = stream
        self.tty = stream.isatty()
        self._monotonic = monotonic
        self._started = monotonic()
        self._said_at = -float("inf")

    def step(self, what: str) -> None:
        self.done += 1
        elapsed = self._monotonic() - self._started
        left = elapsed / self.done * (self.total - self.done)
        eta = "done" if self.done >= self.total else f"ETA {_duration(left)}"
        if self.tty:
            width = 30
            filled = width * self.done // self.total
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\r[{bar}] {self.done}/{self.total} chunks  {what}  {eta}\x1b[K")
            if self.done >= self.total:
                self.stream.write("\n")
        elif self.done >= self.total or self._monotonic() - self._said_at >= 10:
            self._said_at = self._monotonic()
            self.stream.write(f"backfill: {self.done}/{self.total} chunks, {what}, {eta}\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"


@dataclass
class Backfill:
    """The whole run: check every source first, then fetch, then write, then hand over to the store."""

    config: Config
    start: int
    end: int
    output: Path
    state: StateStore
    only: str | None = None
    clock: Clock = field(default_factory=SystemClock)
    sleep: Sleep = asyncio.sleep
    transport: httpx.AsyncBaseTransport | None = None
    progress_stream: TextIO = field(default_factory=lambda: sys.stderr)
    # What sources of one vendor account share: a backfill of two sources of one Kore.ai account stays
    # within the account's one budget (pacing.Accounts).
    accounts: Accounts = field(default_factory=Accounts)
    # the buckets of each source, when there is no store to keep them in
    _memory: dict[str, dict[int, dict[Labels, dict[str, int]]]] = field(default_factory=dict)

    def plan(self) -> list[Plan]:
        """Every source to backfill, or ConfigError naming what cannot be done."""
        if self.start >= self.end:
            raise ConfigError(f"--from ({isoformat_z(self.start)}) must be before --to ({isoformat_z(self.end)})")
        sources = [s for s in self.config.sources if self.only in (None, s.name)]
        if not sources:
            names = ", ".join(s.name for s in self.config.sources)
            raise ConfigError(f"--source: no source is named {self.only!r} in {self.config.path} (there are: {names})")
        now = self.clock.now()
        plans = []
        for cfg in sources:
            cls = PROVIDERS[cfg.provider]
            if not issubclass(cls, BucketProvider):
                self._cannot_serve(
                    f"{cfg.name} ({cfg.provider}): the provider serves no history, "
                    f"only its last {cfg.longest_window // 3600}h"
                )
                continue
            every, bucket = cfg.every.seconds, cfg.bucket_seconds
            for flag, t in (("--from", self.start), ("--to", self.end)):
                if t % bucket or t % every:
                    raise ConfigError(
                        f"{flag} ({isoformat_z(t)}) is not a multiple of {cfg.name}'s bucket ({bucket // 60}m) and "
                        f"every ({every // 60}m): the counters only move there"
                    )
            newest = final_until(
                closed_until(floor_to(now - cfg.delay.seconds, every), bucket),
                bucket=bucket,
                longest_window=cfg.longest_window,
                refresh=cfg.refresh_seconds,
            )
            if self.end > newest:
                raise ConfigError(
                    f"--to ({isoformat_z(self.end)}) is after {cfg.name}'s newest final bucket "
                    f"({isoformat_z(newest)}): buckets within refresh ({cfg.refresh_seconds // 60}m) of now "
                    "may still change"
                )
            history = cls.history
            if history is not None and self.start < now - history:
                page = cfg.provider.replace("_", "-")  # docs/providers/amazon-connect.md
                self._cannot_serve(
                    f"--from ({isoformat_z(self.start)}) is further back than {cfg.name} ({cfg.provider}) serves: "
                    f"its API answers the last {history // 3600}h only (docs/providers/{page}.md)"
                )
                continue
            if self.state.has_state(cfg.name):
                raise ConfigError(
                    f"{cfg.name} is already counted live in {self.state.path}: backfill before the exporter first "
                    "polls a source (docs/backfill.md), or move the store away to start its counters afresh"
                )
            health = SourceHealth(cfg.name, cfg.provider, cfg.stale_after)
            provider = cls(
                cfg, health, clock=self.clock, sleep=self.sleep, transport=self.transport, accounts=self.accounts
            )
            plans.append(
                Plan(
                    cfg,
                    provider,
                    self.start,
                    self.end,
                    identity(cfg.provider, bucket, getattr(cfg, "group_by", None), provider.fields),
                )
            )
        return plans

    def _cannot_serve(self, reason: str) -> None:
        """A source the provider cannot backfill: an error when it was asked for by name, else skipped with a
        line (a whole config's backfill goes on without it)."""
        if self.only is not None:
            raise ConfigError(reason)
        print(f"backfill: skipped {reason}", file=self.progress_stream)

    async def run(self) -> int:
        try:
            plans = self.plan()
        except ConfigError as exc:
            print(f"aht-exporter backfill: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except sqlite3.Error as exc:
            print(f"aht-exporter backfill: the store {self.state.path} failed: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        try:
            return await self._run(plans)
        except (sqlite3.Error, OSError) as exc:  # the store, or the output file: what was fetched is kept
            print(f"aht-exporter backfill: {exc}; run the same command again to resume", file=sys.stderr)
            return EXIT_FAILURE
        finally:
            await asyncio.gather(*(p.provider.aclose() for p in plans), return_exceptions=True)

    async def _run(self, plans: list[Plan]) -> int:
        resume = {p.name: self.state.backfill_resume(p.name, p.identity, p.start, p.end) for p in plans}
        chunks = {p.name: p.chunks(resume[p.name]) for p in plans}
        progress = Progress(sum(len(c) for c in chunks.values()), self.progress_stream)
        for p in plans:
            if resume[p.name] > p.start:
                print(f"backfill: {p.name}: resuming at {isoformat_z(resume[p.name])}", file=self.progress_stream)
            for s, e in chunks[p.name]:
                try:
                    buckets = await self._fetch(p, s, e)
                    store = SourceStore(
                        bucket=p.config.bucket_seconds, windows=p.config.windows, fields=p.provider.fields
                    )
                    store.replace(s, e, buckets)
                except ProviderError as exc:
                    print(
                        f"aht-exporter backfill: {p.name}: {isoformat_z(s)}/{isoformat_z(e)}: {exc}"
                        + ("; run the same command again to resume" if self.state.enabled else ""),
                        file=sys.stderr,
                    )
                    return EXIT_FAILURE
                fetched = store.take_changes(everything=True).buckets
                groups = {t: {labels: dict(v) for labels, v in g.items()} for t, g in fetched.items()}
                if self.state.enabled:
                    self.state.backfill_save(p.name, e, groups)
                else:
                    self._memory.setdefault(p.name, {}).update(groups)
                progress.step(f"{p.name} {isoformat_z(s)[:10]}")
        timelines = [(p, Timeline.build(list(p.polls()), p.provider.fields, self._buckets(p))) for p in plans]
        partial = self.output.with_name(self.output.name + ".partial")
        with partial.open("w", encoding="utf-8") as out:
            samples = write_openmetrics(out, timelines, self.clock.now())
        partial.replace(self.output)  # never a half-written file under the name promtool is given
        for p, timeline in timelines:
            self._hand_over(p, timeline)
        series = sum(len(t.changes) * len(t.fields) for _, t in timelines)
        print(f"backfill: wrote {samples} samples of {series} series to {self.output}", file=self.progress_stream)
        return EXIT_OK

    async def _fetch(self, plan: Plan, start: int, end: int) -> list[Bucket]:
        """One chunk. A rate limit is waited out: a big tenant's history takes hours within its budget, and
        the client's own retries are sized for a poll, not for that."""
        for pause in range(MAX_PAUSES + 1):
            try:
                return await plan.provider.fetch(start, end)
            except RateLimited as exc:
                if pause == MAX_PAUSES:
                    raise
                print(
                    f"backfill: {plan.name}: rate limited ({exc}): waiting {RATE_LIMIT_PAUSE:.0f}s",
                    file=self.progress_stream,
                )
                await self.sleep(RATE_LIMIT_PAUSE)
        raise AssertionError("unreachable")  # pragma: no cover

    def _buckets(self, plan: Plan) -> Iterator[tuple[int, dict[Labels, dict[str, int]]]]:
        if self.state.enabled:
            return self.state.backfill_buckets(plan.name)
        return iter(sorted(self._memory.get(plan.name, {}).items()))

    def _hand_over(self, plan: Plan, timeline: Timeline) -> None:
        """The store as the live exporter would have left it at `to`: the counters go on from here."""
        if not self.state.enabled:
            return
        cfg = plan.config
        keep_from = plan.end - cfg.longest_window
        store = SourceStore(bucket=cfg.bucket_seconds, windows=cfg.windows, fields=plan.provider.fields)
        store.restore(
            SourceState(
                fetched_until=plan.end,
                final_until=plan.end,
                buckets={t: g for t, g in self._buckets(plan) if t >= keep_from},
                totals={labels: dict(v) for labels, v in timeline.totals.items()},
                last_seen=dict(timeline.last_seen),
            )
        )
        self.state.backfill_finish(plan.name, plan.identity, store.take_changes(everything=True))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aht-exporter backfill",
        description="Write history as OpenMetrics for `promtool tsdb create-blocks-from openmetrics`.",
        allow_abbrev=False,
    )
    p.add_argument("--config.file", dest="config_file", metavar="PATH", help="config file (default config.yaml)")
    p.add_argument("--demo", action="store_true", help="backfill from the built-in simulators (they serve any past)")
    p.add_argument("--from", dest="start", required=True, metavar="DATE", help="first day (UTC), e.g. 2026-11-01")
    p.add_argument("--to", dest="end", required=True, metavar="DATE", help="end, not included, e.g. 2026-12-01")
    p.add_argument("--source", dest="only", metavar="NAME", help="only this source")
    p.add_argument("--output", required=True, metavar="FILE", help="the OpenMetrics file to write")
    p.add_argument(
        "--storage.path",
        dest="storage",
        default=DEFAULT_STORAGE,
        metavar="DIR",
        help="the exporter's store: progress for resuming, and the state the live exporter continues from "
        f"(default {DEFAULT_STORAGE}; empty: memory only, no resume, no hand-over)",
    )
    return p


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        start, end = parse_when(args.start, "--from"), parse_when(args.end, "--to")
    except ConfigError as exc:
        print(f"aht-exporter backfill: {exc}", file=sys.stderr)
        return EXIT_USAGE
    state = StateStore(Path(args.storage) if args.storage else None)
    if args.storage and not state.enabled:
        print(f"aht-exporter backfill: cannot use the store: {state.last_error}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        if args.demo:
            return asyncio.run(_demo(args, start, end, state))
        try:
            config = load_config(args.config_file or "config.yaml")
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return EXIT_USAGE
        return asyncio.run(Backfill(config, start, end, Path(args.output), state, only=args.only).run())
    finally:
        state.close()


async def _demo(args: argparse.Namespace, start: int, end: int, state: StateStore) -> int:
    from aht_exporter.simulator.demo import Demo

    demo = Demo(SystemClock())
    config = await demo.start()
    try:
        return await Backfill(config, start, end, Path(args.output), state, only=args.only).run()
    finally:
        await demo.stop()
