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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from aht_exporter.clock import Clock, SystemClock
from aht_exporter.config import Config, SourceConfig
from aht_exporter.exposition import ReloadStatus, Rendered, Renderer, SourceView
from aht_exporter.health import SourceHealth
from aht_exporter.httpclient import Sleep
from aht_exporter.memory import let_go, release_free_memory
from aht_exporter.model import Names, ProviderError
from aht_exporter.pacing import Accounts
from aht_exporter.providers import PROVIDERS
from aht_exporter.providers.base import AnyProvider
from aht_exporter.redact import Redactor
from aht_exporter.state import StateStore, identity
from aht_exporter.store import Snapshot, Span, Store
from aht_exporter.timebuckets import isoformat_z, poll_budget

log = logging.getLogger(__name__)
_T = TypeVar("_T")


# A poll's partial results (Ozonetel's answers, one per request) are shown at most this often.
MIN_PUBLISH_GAP = 1.0
# Seconds a reload waits for the cancelled polls of the sources it restarts or removes to end.
RETIRE_LIMIT = 2.0


def poll_deadline(config: SourceConfig) -> float:
    """A poll must end before the next one is due (timebuckets.poll_budget)."""
    return poll_budget(config.every.seconds)


class SourceRunner:
    """Polls one source: provider -> store -> snapshot, and keeps its health."""

    def __init__(
        self,
        config: SourceConfig,
        provider: AnyProvider,
        *,
        clock: Clock,
        redactor: Redactor,
        on_update: Callable[[], None] = lambda: None,
        publish_gap: Callable[[], float] = lambda: MIN_PUBLISH_GAP,
        state: StateStore | None = None,
    ) -> None:
        self.config = config
        self.provider = provider
        self.health = provider.health
        self.clock = clock
        self.redactor = redactor
        self.on_update = on_update
        self.store: Store[Any] = provider.new_store()
        # Buckets and totals survive a restart in the state store, for stores that have them (docs/exact-ranges.md).
        self.state = state if state is not None and self.store.keeps_state else StateStore(None)
        self.store.keeps_changes = self.state.enabled  # for nobody to take, they would only pile up
        self.identity = identity(
            config.provider, config.bucket_seconds, getattr(config, "group_by", None), provider.fields
        )
        self._resave = False  # the last save failed: the next one writes the whole state
        self.counter_lag = self.store.counter_lag
        provider.publish = self._publish_part
        if self.state.enabled:
            self._restore()
        self.snapshot: Snapshot | None = None
        self._names = Names()
        self._names_at: float | None = None
        self.publish_gap = publish_gap
        self.job_id = config.name  # the Exporter gives each runner's scheduler job an id of its own
        self._published_at = -math.inf
        # The store's work runs in a worker thread, off the event loop (a 100k-series poll is a fraction
        # of a second of CPU that scrapes would otherwise wait behind), one piece at a time: see `_off_loop`.
        self._store_work: asyncio.Future[Any] | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def _restore(self) -> None:
        saved = self.state.load(self.name, self.identity)
        if saved is None:
            return
        self.store.restore(saved)
        log.info(
            "state restored",
            extra={
                "source": self.name,
                "fetched_until": isoformat_z(saved.fetched_until) if saved.fetched_until is not None else "none",
                "buckets": len(saved.buckets),
                "series": len(saved.totals),
            },
        )

    async def _off_loop(self, work: Callable[[], _T]) -> _T:
        """Run `work` on the store in a worker thread, after any earlier store work of this runner has ended.

        A thread cannot be stopped: when the poll is cancelled (its deadline, a reload) while `work` runs,
        the work still runs to its end, and the next poll's store work waits for it. So the store is only
        ever touched by one thread at a time, and each piece of work is whole when the next one sees it.
        The render never reads the store, only the immutable snapshots made from it."""
        await self._store_settled()
        task: asyncio.Future[_T] = asyncio.ensure_future(asyncio.to_thread(work))
        self._store_work = task
        # Nobody may be left to read a failure of work whose poll was cancelled: read it here, so that
        # asyncio does not log it as never retrieved (the poll that awaited it, if any, reports it).
        task.add_done_callback(lambda t: None if t.cancelled() else t.exception())
        return await asyncio.shield(task)

    async def _store_settled(self) -> None:
        """Wait for the store work of a cancelled poll, if it is still running; its outcome was that poll's."""
        if self._store_work is not None and not self._store_work.done():
            await asyncio.wait([self._store_work])

    def _apply(self, span: Span, handed: list[Any], everything: bool) -> tuple[Mapping[str, object], bool | None]:
        """In a thread: the provider's result into the store, then what changed into the state store (all
        of it if `everything`), as one piece of work. Returns what to log of the result, and whether the save
        succeeded (None: no state store).

        The result comes in `handed`, which holds the only reference to it, and is freed here: a list of
        buckets a few thousand at a time (`let_go`). Freed on the event loop as the poll's frame ended, the
        100,000-agent poll's buckets were 11 to 26 ms of the loop's own CPU; freed whole here, 16 to 33 ms with
        the GIL held. Every scrape waited either way (docs/performance.md, "Freed where they are made")."""
        result = handed.pop()
        try:
            details = self.store.apply(span, result)
        finally:  # and a result the store refused (a bucket outside the span), which its traceback would keep
            if isinstance(result, list):
                let_go(result)
            del result
        return details, (self._write(everything) if self.state.enabled else None)

    def _write(self, everything: bool) -> bool:
        """In the thread of `_apply`: copying what changed costs as much as writing it, on a big source.
        A failed save is logged by the state store once and never fails the poll: the next save writes
        the whole state instead."""
        return self.state.save(self.name, self.identity, self.store.take_changes(everything=everything))

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
            await self._succeed(started, data_end, details)
        finally:
            self.provider.client.set_deadline(None)
        self.on_update()
        return self.health.up

    async def _update(self, now: float) -> tuple[int, dict[str, object]]:
        """Fetch and store; return the end of the data and what to log about it."""
        await self._store_settled()  # the span to fetch depends on what a cancelled poll's work stored
        span = self.store.span(now)
        result = await self.provider.fetch(span.start, span.end) if span.start < span.end else []
        # Until a save is known to have succeeded, the next one writes the whole state (this poll may be
        # cancelled before it knows).
        everything, self._resave = self._resave, self.state.enabled
        handed = [result]  # the worker takes it, and frees it (`_apply`)
        del result
        details, saved = await self._off_loop(lambda: self._apply(span, handed, everything))
        self._resave = saved is False
        return span.data_end, dict(details)

    def _publish_part(self, part: Any) -> None:
        """A part of a result that came before the end of its poll: stored now, and shown at most every
        `publish_gap()` seconds (a render of everything per part would cost more than it is worth)."""
        self.store.publish(part)
        moment = time.monotonic()
        if moment - self._published_at < self.publish_gap():
            return
        self._published_at = moment
        self.snapshot = self.store.snapshot(int(self.clock.now()), self._names, self.config.max_series)
        self.on_update()

    async def _succeed(self, started: float, data_end: int, details: dict[str, object]) -> None:
        cfg = self.config
        names = self._names

        # Summing the windows over every label set, and counting them: a tenth of a second at 100k series.
        def summed() -> tuple[Snapshot, int]:
            made = self.store.snapshot(data_end, names, cfg.max_series)
            return made, made.series

        snapshot, series = await self._off_loop(summed)
        self.snapshot, self.health.series = snapshot, series
        if snapshot.series_dropped:
            self.health.series_dropped += snapshot.series_dropped
            log.warning(
                "series dropped by max_series",
                extra={"source": self.name, "dropped": snapshot.series_dropped, "max": cfg.max_series},
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
        return SourceView(
            frozen, self.snapshot, self.config.routing_labels, self.config.queue_routing_labels, self.counter_lag
        )


@dataclass(frozen=True, slots=True)
class Changes:
    """What a new config changes, by source name, each in the order of the config that has it."""

    kept: tuple[str, ...] = ()  # the whole resolved config is equal: runner, store, counters and job stay
    restarted: tuple[str, ...] = ()  # same name, anything else differs: closed, and started afresh
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


def diff_sources(old: Sequence[SourceConfig], new: Sequence[SourceConfig]) -> Changes:
    """Compare two configs' sources by name. Equal means every resolved value is equal, the secrets read
    from `*_file`s and `${VAR}`s included (pydantic compares SecretStr by value) and the provider too (a
    source that moves to another provider is another model)."""
    before = {s.name: s for s in old}
    after = {s.name for s in new}
    kept: list[str] = []
    restarted: list[str] = []
    added: list[str] = []
    for source in new:
        was = before.get(source.name)
        if was is None:
            added.append(source.name)
        elif type(was) is type(source) and was == source:
            kept.append(source.name)
        else:
            restarted.append(source.name)
    removed = tuple(s.name for s in old if s.name not in after)
    return Changes(tuple(kept), tuple(restarted), tuple(added), removed)


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
        state: StateStore | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.redactor = Redactor.for_config(config)
        self._sleep = sleep
        self._transport = transport
        self.state = state or StateStore(None)  # --storage.path: memory only unless given one
        # What sources of one vendor account share (pacer, token), kept across reloads (pacing.Accounts).
        self.accounts = Accounts()
        self._jobs = 0  # scheduler jobs made so far: each runner's job has an id of its own
        self.runners: list[SourceRunner] = [self._make_runner(source) for source in config.sources]
        _check_sources(config)
        # The config file was read at start: as Prometheus does, that counts as the first successful load.
        self.reload_status = ReloadStatus(successful=True, success_timestamp=self.clock.now())
        self._was_ready = False  # every source has finished a first poll, once (a reload never undoes it)
        self._retiring: list[SourceRunner] = []  # taken out by a reload, and not yet closed
        self.render_seconds = 0.0  # wall time of the last render
        self._renderer = Renderer()  # keeps each source's formatted series until its next poll
        self._renderer.reload = self.reload_status
        self._renderer.storage_errors = lambda: self.state.errors if self.state.directory is not None else None
        self.rendered: Rendered = self._renderer.render(self.views())
        self._render_task: asyncio.Task[None] | None = None
        self._render_dirty = False
        self._render_error: str | None = None  # the last failed render's, logged once
        self._polls: dict[asyncio.Task[bool], SourceRunner] = {}
        self.scheduler: AsyncIOScheduler | None = None

    def _make_runner(self, source: SourceConfig) -> SourceRunner:
        cls = PROVIDERS[source.provider]
        health = SourceHealth(source.name, source.provider, source.stale_after)
        provider = cls(
            source, health, clock=self.clock, sleep=self._sleep, transport=self._transport, accounts=self.accounts
        )
        runner = SourceRunner(
            source,
            provider,
            clock=self.clock,
            redactor=self.redactor,
            on_update=self.request_render,
            publish_gap=self.publish_gap,
            state=self.state,
        )
        # Not the source's name: a restarted source's new job is added while the old one may still be
        # ending, and APScheduler counts a job's running instances by its id.
        self._jobs += 1
        runner.job_id = f"{source.name}#{self._jobs}"
        return runner

    def views(self) -> list[SourceView]:
        return [r.view() for r in self.runners]

    @property
    def ready(self) -> bool:
        return not self.first_polls_pending()

    def first_polls_pending(self) -> list[str]:
        """The sources /-/ready waits for: each whose first poll has not finished, until every source has
        finished one. From then on none: a source a reload adds or restarts does not make a serving
        exporter unready (its series are missing until it polls, as on any first poll)."""
        if self._was_ready:
            return []
        pending = [r.name for r in self.runners if not r.health.polled]
        self._was_ready = not pending
        return pending

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
        self._polls[task] = runner

        def done(t: asyncio.Task[bool]) -> None:
            self._polls.pop(t, None)
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
        for runner in self.runners:
            self._schedule(self.scheduler, runner)
        self.scheduler.start()

    def _schedule(self, scheduler: AsyncIOScheduler, runner: SourceRunner) -> None:
        """The source's job: its first poll now, then on its aligned cadence."""
        cfg = runner.config
        scheduler.add_job(
            self._scheduled_poll,
            trigger=trigger_for(cfg.every.seconds, cfg.delay.seconds),
            args=[runner],
            id=runner.job_id,
            name=f"poll {runner.name}",
            max_instances=1,
            coalesce=True,
            # The default of 1 s silently drops runs on a busy loop; a late poll is still worth running
            # while it can finish before the next one is due.
            misfire_grace_time=max(1, cfg.every.seconds // 2),
            next_run_time=datetime.now(UTC),
        )

    def _update_next_poll(self, runner: SourceRunner) -> None:
        if self.scheduler is None:
            return
        job = self.scheduler.get_job(runner.job_id)
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
        closing = [*self.runners, *self._retiring]
        await asyncio.gather(*(r.provider.aclose() for r in closing), return_exceptions=True)

    # --- reloading ------------------------------------------------------------------------------

    async def apply(self, config: Config, *, retire_limit: float = RETIRE_LIMIT) -> Changes:
        """Run `config` (valid, loaded) in place of the current one.

        A source whose resolved config is unchanged keeps its runner, provider, HTTP client, store, health
        counters and scheduler job, untouched and unpaused. A changed one's in-flight poll is cancelled
        (its result would belong to a config that is gone), waited for up to `retire_limit` seconds, and
        its provider closed; its new runner polls at once, as an added source does. A removed source's
        series leave /metrics with the render this asks for. Raises only before anything has changed.
        """
        changes = diff_sources(self.config.sources, config.sources)
        old = {r.name: r for r in self.runners}
        redactor = Redactor.for_config(config)
        made: list[SourceRunner] = []
        try:
            for source in config.sources:
                if source.name not in changes.kept:
                    made.append(self._make_runner(source))
            _check_sources(config)
        except BaseException:
            await asyncio.gather(*(r.provider.aclose() for r in made), return_exceptions=True)
            raise
        # From here to the first await, one step as the event loop sees it: a render, a scrape or a poll's
        # end sees the old sources or the new ones, never a mix.
        self.first_polls_pending()  # an exporter ready before the reload stays ready
        fresh = iter(made)
        self.runners = [old[s.name] if s.name in changes.kept else next(fresh) for s in config.sources]
        self.config = config
        self.redactor = redactor
        for runner in self.runners:
            runner.redactor = redactor
        retired = [old[name] for name in (*changes.restarted, *changes.removed)]
        self._retiring += retired
        if self.scheduler is not None:
            for runner in retired:
                with contextlib.suppress(JobLookupError):
                    self.scheduler.remove_job(runner.job_id)
        self.request_render()
        await self._retire(retired, retire_limit)
        if self.scheduler is not None and self.scheduler.running:
            for runner in made:
                self._schedule(self.scheduler, runner)
        return changes

    async def _retire(self, runners: Sequence[SourceRunner], limit: float) -> None:
        """Cancel the retired runners' polls, wait up to `limit` for them to end, close their providers.

        A poll that has not ended by then stays tracked, and shutdown waits for it as for any other."""
        polls = [task for task, runner in self._polls.items() if runner in runners]
        for task in polls:
            task.cancel()
        if polls:
            _, still = await asyncio.wait(polls, timeout=limit)
            if still:
                names = ",".join(sorted({self._polls[t].name for t in still if t in self._polls}))
                log.warning("reload: cancelled polls have not ended yet", extra={"sources": names})
        await asyncio.gather(*(r.provider.aclose() for r in runners), return_exceptions=True)
        self._retiring = [r for r in self._retiring if r not in runners]

    def set_reload_status(self, status: ReloadStatus) -> None:
        """Record a reload's outcome, and show it on /metrics."""
        self.reload_status = status
        self._renderer.reload = status  # read once per render, by whichever thread renders
        self.request_render()


def _check_sources(config: Config) -> None:
    for name, cls in PROVIDERS.items():
        cls.check_sources([s for s in config.sources if s.provider == name])
