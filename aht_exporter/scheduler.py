"""Polling: one APScheduler job per source, aligned to UTC multiples of `every` plus `delay`.

Each source polls in its own task with its own deadline, so one slow or failing source never delays
another. A poll fetches closed buckets only, updates the store, and asks for one re-render of the
exposition; scrapes only ever read the rendered bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from aht_exporter.clock import Clock, SystemClock
from aht_exporter.config import Config, SourceConfig
from aht_exporter.exposition import Rendered, Renderer, SourceView
from aht_exporter.health import SourceHealth
from aht_exporter.httpclient import Sleep
from aht_exporter.memory import release_free_memory
from aht_exporter.model import AverageUpdate, Names, ProviderError
from aht_exporter.providers import PROVIDERS, Provider
from aht_exporter.providers.base import AverageProvider
from aht_exporter.redact import Redactor
from aht_exporter.store import AverageStore, Snapshot, SourceStore
from aht_exporter.timebuckets import closed_until, fetch_span, poll_boundary

log = logging.getLogger(__name__)


# A poll's partial results (Ozonetel's answers, one per request) are shown at most this often.
MIN_PUBLISH_GAP = 1.0


def poll_deadline(config: SourceConfig) -> float:
    """A poll must end before the next one is due: leave it all of `every` but ten seconds."""
    return max(10.0, config.every.seconds - 10.0)


class SourceRunner:
    """Polls one source: provider -> store -> snapshot, and keeps its health."""

    def __init__(
        self,
        config: SourceConfig,
        provider: Provider,
        *,
        clock: Clock,
        redactor: Redactor,
        on_update: Callable[[], None] = lambda: None,
        publish_gap: Callable[[], float] = lambda: MIN_PUBLISH_GAP,
    ) -> None:
        self.config = config
        self.provider = provider
        self.health = provider.health
        self.clock = clock
        self.redactor = redactor
        self.on_update = on_update
        self.store = SourceStore(bucket=config.bucket_seconds, windows=config.windows, fields=provider.fields)
        self.averages = AverageStore(max(config.windows))
        self.snapshot: Snapshot | None = None
        self._names = Names()
        self._names_at: float | None = None
        self.publish_gap = publish_gap
        self._published_at = -math.inf

    @property
    def name(self) -> str:
        return self.config.name

    async def poll(self) -> bool:
        """One poll; never raises for a provider failure. Returns whether it succeeded."""
        started = time.monotonic()
        now = self.clock.now()
        budget = poll_deadline(self.config)
        self.provider.client.set_deadline(started + budget)
        try:
            async with asyncio.timeout(budget):
                data_end, details = await self._update(now)
            # Names are decoration: what is left of the poll's time bounds them, and they never fail it.
            await self._refresh_names(now, started + budget - time.monotonic())
        except ProviderError as exc:
            self._fail(now, started, str(exc))
        except TimeoutError:
            self._fail(now, started, f"poll did not finish within {budget:.0f}s")
        except Exception as exc:  # a bug, not a provider fault: log it loudly, but keep the daemon alive
            log.exception("poll crashed", extra={"source": self.name})
            self._fail(now, started, f"internal error: {type(exc).__name__}: {exc}")
        else:
            self._succeed(started, data_end, details)
        finally:
            self.provider.client.set_deadline(None)
        self.on_update()
        return self.health.up

    async def _update(self, now: float) -> tuple[int, dict[str, object]]:
        """Fetch and store; return the end of the data and what to log about it."""
        if isinstance(self.provider, AverageProvider):
            update = await self.provider.fetch_averages(self._publish_part)
            self.averages.apply(update)
            # The provider's average covers its fixed span up to the moment it answered.
            return int(now), {"refreshed": len(update.averages), "removed": len(update.removed)}
        cfg = self.config
        data_end = closed_until(poll_boundary(now, cfg.every.seconds, cfg.delay.seconds), cfg.bucket_seconds)
        start, end = fetch_span(
            data_end,
            bucket=cfg.bucket_seconds,
            longest_window=self.store.longest_window,
            refresh=cfg.refresh_seconds,
            every=cfg.every.seconds,
            fetched_until=self.store.fetched_until,
        )
        buckets = await self.provider.fetch(start, end) if start < end else []
        self.store.replace(start, end, buckets)
        self.store.prune(data_end)
        return data_end, {"span": f"{(end - start) // 60}m", "buckets": len(buckets)}

    def _publish_part(self, update: AverageUpdate) -> None:
        """An answer that came before the end of its poll: stored now, and shown at most every
        `publish_gap()` seconds (a render of everything per answer would cost more than it is worth)."""
        self.averages.apply(update)
        moment = time.monotonic()
        if moment - self._published_at < self.publish_gap():
            return
        self._published_at = moment
        self.snapshot = self.averages.snapshot(int(self.clock.now()), self._names, self.config.max_series)
        self.on_update()

    def _succeed(self, started: float, data_end: int, details: dict[str, object]) -> None:
        cfg = self.config
        source = self.averages if isinstance(self.provider, AverageProvider) else self.store
        self.snapshot = source.snapshot(data_end, self._names, cfg.max_series)
        self.health.series = self.snapshot.series
        if self.snapshot.series_dropped:
            self.health.series_dropped += self.snapshot.series_dropped
            log.warning(
                "series dropped by max_series",
                extra={"source": self.name, "dropped": self.snapshot.series_dropped, "max": cfg.max_series},
            )
        duration = time.monotonic() - started
        self.health.record_success(self.clock.now(), duration, data_end)
        log.info(
            "poll ok",
            extra={"source": self.name, **details, "series": self.health.series, "duration": round(duration, 3)},
        )

    def _fail(self, now: float, started: float, error: str) -> None:
        # Vendor words, shown on / and in the log (a vendor's message in a 200 can be megabytes).
        error = self.redactor.shown(error)
        self.health.record_failure(now, time.monotonic() - started, error)
        stale = " (data withdrawn)" if self.health.stale else ""
        log.warning(
            f"poll failed{stale}",
            extra={"source": self.name, "error": error, "failures": self.health.consecutive_failures},
        )

    async def _refresh_names(self, now: float, seconds_left: float) -> None:
        if self._names_at is not None and now - self._names_at < self.provider.names_every:
            return
        self._names_at = now
        try:
            async with asyncio.timeout(max(0.0, seconds_left)):
                self._names = await self.provider.names()
        except Exception as exc:
            # Names are decoration: whatever goes wrong with them (a vendor error, a timeout, a reply that
            # breaks the parser: nested 100,000 deep, say) never fails a poll, and the old names stay.
            # Cancellation is not an Exception: it still ends the poll.
            if isinstance(exc, TimeoutError):
                error = f"not finished within the poll's time ({seconds_left:.0f}s left)"
            elif isinstance(exc, ProviderError):
                error = str(exc)
            else:
                error = f"{type(exc).__name__}: {exc}"
            log.warning("name lookup failed", extra={"source": self.name, "error": self.redactor.shown(error)})

    def view(self) -> SourceView:
        """An immutable copy for rendering in another thread."""
        h = self.health
        frozen = dataclasses.replace(
            h,
            polls=Counter(h.polls),
            api_requests=Counter(h.api_requests),
            duration_buckets=list(h.duration_buckets),
        )
        return SourceView(frozen, self.snapshot)


def trigger_for(every: int, delay: int) -> BaseTrigger:
    """Fire at UTC multiples of `every`, plus `delay`.

    A cron trigger where the cadence divides an hour or a day (every cadence cron can express);
    otherwise an interval trigger anchored at the Unix epoch, which lands on the same multiples.
    """
    d_min, d_sec = divmod(delay, 60)
    if every < 3600 and 3600 % every == 0:
        return CronTrigger(minute=f"{d_min}-59/{every // 60}", second=d_sec, timezone=UTC)
    if every % 3600 == 0 and 86400 % every == 0:
        # `*/24` is out of cron's range (0-23): once a day is hour 0.
        hours = "0" if every == 86400 else f"*/{every // 3600}"
        return CronTrigger(hour=hours, minute=d_min, second=d_sec, timezone=UTC)
    epoch = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=delay)
    return IntervalTrigger(seconds=every, start_date=epoch, timezone=UTC)


class Exporter:
    """All sources, their schedule, and the rendered exposition."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.redactor = Redactor.for_config(config)
        self.runners: list[SourceRunner] = []
        for source in config.sources:
            cls = PROVIDERS[source.provider]
            health = SourceHealth(source.name, source.provider, source.stale_after)
            provider = cls(source, health, clock=self.clock, sleep=sleep, transport=transport)
            self.runners.append(
                SourceRunner(
                    source,
                    provider,
                    clock=self.clock,
                    redactor=self.redactor,
                    on_update=self.request_render,
                    publish_gap=self.publish_gap,
                )
            )
        for name, cls in PROVIDERS.items():
            cls.check_sources([s for s in config.sources if s.provider == name])
        self.render_seconds = 0.0  # wall time of the last render
        self._renderer = Renderer()  # keeps each source's formatted series until its next poll
        self.rendered: Rendered = self._renderer.render(self.views())
        self._render_task: asyncio.Task[None] | None = None
        self._render_dirty = False
        self._render_error: str | None = None  # the last failed render's, logged once
        self._polls: set[asyncio.Task[bool]] = set()
        self.scheduler: AsyncIOScheduler | None = None

    def views(self) -> list[SourceView]:
        return [r.view() for r in self.runners]

    @property
    def ready(self) -> bool:
        return all(r.health.polled for r in self.runners)

    # --- rendering ----------------------------------------------------------------------------

    def publish_gap(self) -> float:
        """How often a poll's partial results are worth a render: at least a second, and rare enough that
        renders take no more than a twentieth of the time (a render is all sources' bytes, recompressed)."""
        return max(MIN_PUBLISH_GAP, 20 * self.render_seconds)

    def request_render(self) -> None:
        """Re-render once after this poll; polls that end during a render share the next one."""
        self._render_dirty = True
        if self._render_task is None or self._render_task.done():
            self._render_task = asyncio.get_running_loop().create_task(self._render_loop())

    async def _render_loop(self) -> None:
        """Render until no poll is waiting for one. Supervised: a render that fails keeps the last bodies,
        logs once, and the loop goes on (a dead render task would freeze /metrics for every source)."""
        while self._render_dirty:
            self._render_dirty = False
            try:
                views = self.views()
                started = time.monotonic()
                self.rendered = await asyncio.to_thread(self._renderer.render, views)
                self.render_seconds = time.monotonic() - started
                self._render_error = None
                self._record_render_failures(self._renderer.failures)
                # The old bodies are free now (unless a scrape is still writing them): hand their memory back.
                await asyncio.to_thread(release_free_memory)
            except Exception as exc:
                error = self.redactor.shown(f"{type(exc).__name__}: {exc}")
                if error != self._render_error:  # once, not once per poll of every source
                    log.error("render failed: /metrics keeps its last body", extra={"error": error})
                self._render_error = error

    def _record_render_failures(self, failures: dict[str, str]) -> None:
        """A source whose data could not be rendered is down until a poll brings data that can be: its
        data is left out, `source_up` says 0 and the status page says why. The others are untouched."""
        for runner in self.runners:
            error = failures.get(runner.name)
            if error is not None:
                runner.health.up = False
                runner.health.last_error = self.redactor.shown(error)
                runner.health.last_error_at = self.clock.now()
                self._render_dirty = True  # show it: the bodies just rendered still say up

    async def rendered_now(self) -> Rendered:
        """Wait for any pending render (used by --once and tests)."""
        while self._render_task is not None and not self._render_task.done():
            await self._render_task
        return self.rendered

    # --- polling --------------------------------------------------------------------------------

    async def poll_all(self, runners: Sequence[SourceRunner] | None = None) -> bool:
        """Poll every source once, concurrently; True if all succeeded."""
        results = await asyncio.gather(*(self._start_poll(r) for r in runners or self.runners))
        return all(results)

    def _start_poll(self, runner: SourceRunner) -> asyncio.Task[bool]:
        """A poll in a task of its own, tracked so that shutdown can let it finish."""
        task = asyncio.get_running_loop().create_task(runner.poll(), name=f"poll {runner.name}")
        self._polls.add(task)

        def done(t: asyncio.Task[bool]) -> None:
            self._polls.discard(t)
            self._update_next_poll(runner)

        task.add_done_callback(done)
        return task

    async def _scheduled_poll(self, runner: SourceRunner) -> None:
        """The scheduler's job. APScheduler cancels running jobs when it shuts down; the shield keeps
        the poll itself going, so that aclose() decides how long it may take."""
        task = self._start_poll(runner)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)

    def start(self) -> None:
        """Schedule every source; the first poll of each fires now, then on its aligned cadence."""
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        now = datetime.now(UTC)
        for runner in self.runners:
            cfg = runner.config
            self.scheduler.add_job(
                self._scheduled_poll,
                trigger=trigger_for(cfg.every.seconds, cfg.delay.seconds),
                args=[runner],
                id=runner.name,
                name=f"poll {runner.name}",
                max_instances=1,
                coalesce=True,
                # The default of 1 s silently drops runs on a busy loop; a late poll is still worth running
                # while it can finish before the next one is due.
                misfire_grace_time=max(1, cfg.every.seconds // 2),
                next_run_time=now,
            )
        self.scheduler.start()

    def _update_next_poll(self, runner: SourceRunner) -> None:
        if self.scheduler is None:
            return
        job = self.scheduler.get_job(runner.name)
        if job is not None and job.next_run_time is not None:
            runner.health.next_poll = job.next_run_time.timestamp()

    async def aclose(self, grace: float = 8.0) -> None:
        """Stop scheduling, let in-flight polls finish within `grace` seconds, cancel the rest."""
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        pending = set(self._polls)
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace)
            if still:
                names = ",".join(sorted(t.get_name().removeprefix("poll ") for t in still))
                log.warning("polls still running at shutdown: cancelled", extra={"sources": names})
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=1.0)
        await asyncio.gather(*(r.provider.aclose() for r in self.runners), return_exceptions=True)
