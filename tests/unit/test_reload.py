"""Config reload (issue 15): what a new config keeps, restarts, adds and removes, over mocked Genesys HTTP.

Every source is a Genesys source of its own OAuth client (`id-<name>`), so that each request says whose it
is. The scheduler runs for real (each source's first poll fires at once); every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import respx

from aht_exporter import httpclient
from aht_exporter.clock import FakeClock
from aht_exporter.config import Config
from aht_exporter.exposition import ReloadStatus
from aht_exporter.logs import LogfmtFormatter
from aht_exporter.redact import MASK, Redactor
from aht_exporter.registry import build_config, load_config
from aht_exporter.reload import Outcome, Reloader, secrets_in_file
from aht_exporter.scheduler import Changes, Exporter, diff_sources
from aht_exporter.server import check_telemetry_path, start_server
from tests.helpers import T0, parse_exposition, samples

API = "https://api.mypurecloud.ie"
TOKEN = "https://login.mypurecloud.ie/oauth/token"
QUERY = f"{API}/api/v2/analytics/conversations/aggregates/query"
WAIT = 10.0  # seconds any one condition may take before the test fails


def source(name: str, secret: str | None = None, **extra: Any) -> str:
    """One source's YAML; `secret` None reads it from the `secret_file` in `extra`."""
    lines = [
        f"  - name: {name}",
        "    provider: genesys",
        "    region: mypurecloud.ie",
        f"    client_id: id-{name}",
        "    group_by: [media_type]",
        # Scheduled once a day (00:01 UTC) after the first poll at start: no poll the test did not ask
        # for falls inside it.
        "    every: 1d",
    ]
    if secret is not None:
        lines.append(f"    client_secret: {secret}")
    lines += [f"    {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def write(path: Path, *sources: str) -> Path:
    path.write_text("sources:\n" + "".join(sources))
    return path


class Vendor:
    """Genesys, as respx serves it: a token per client, an empty aggregates reply, and a gate per client
    that holds its queries until opened."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.waiting: dict[str, int] = {}

    @staticmethod
    def client_of(request: httpx.Request) -> str:
        auth = str(request.headers.get("Authorization", ""))
        if auth.startswith("Basic "):
            return base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")[0]
        return auth.removeprefix("Bearer tok-")

    def queries(self, client: str) -> list[httpx.Request]:
        return [r for r in self.requests if str(r.url) == QUERY and self.client_of(r) == client]

    def token_requests(self, client: str) -> list[httpx.Request]:
        return [r for r in self.requests if str(r.url) == TOKEN and self.client_of(r) == client]

    async def token(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        client = self.client_of(request)
        return httpx.Response(200, json={"access_token": f"tok-{client}", "token_type": "bearer", "expires_in": 86400})

    async def query(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        client = self.client_of(request)
        gate = self.gates.get(client)
        if gate is not None:
            self.waiting[client] = self.waiting.get(client, 0) + 1
            try:
                await gate.wait()
            finally:
                self.waiting[client] -= 1
        return httpx.Response(200, json={})


@pytest.fixture
def vendor() -> Iterator[Vendor]:
    v = Vendor()
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        mock.post(TOKEN).mock(side_effect=v.token)
        mock.post(QUERY).mock(side_effect=v.query)
        yield v


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition`, at most WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT}s: {what}")
        await asyncio.sleep(0.01)


def polls(exporter: Exporter, name: str) -> int:
    (runner,) = [r for r in exporter.runners if r.name == name]
    return sum(runner.health.polls.values())


async def scrape(exporter: Exporter) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return parse_exposition((await exporter.rendered_now()).text.decode())


Started = tuple[Exporter, Reloader, Path, FakeClock]


@pytest_asyncio.fixture
async def started(tmp_path: Path, vendor: Vendor) -> AsyncIterator[Started]:
    """Sources a, b and c from a config file, scheduled, each with its first poll done."""
    path = write(
        tmp_path / "config.yaml",
        source("a", "secret-a-1234"),
        source("b", "secret-b-1234"),
        source("c", "secret-c-1234"),
    )
    clock = FakeClock(T0)
    exporter = Exporter(load_config(path), clock=clock)
    reloader = Reloader(exporter, str(path))
    exporter.start()
    await until(lambda: all(polls(exporter, n) == 1 for n in "abc"), "the first polls")
    yield exporter, reloader, path, clock
    await reloader.aclose()
    await exporter.aclose(grace=1.0)


# --- which sources change -----------------------------------------------------------------------


def config_of(*sources: dict[str, Any]) -> Config:
    return build_config({"sources": list(sources)}, "t", {})


def genesys(name: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "genesys",
        "region": "mypurecloud.ie",
        "client_id": "id",
        "client_secret": "secret-1234",
        **overrides,
    }


def test_diff_sorts_sources_into_kept_restarted_added_and_removed() -> None:
    old = config_of(genesys("same"), genesys("windows"), genesys("secret"), genesys("gone"))
    new = config_of(
        genesys("added"),
        genesys("secret", client_secret="secret-5678"),
        genesys("windows", windows=["30m", "2h"]),
        genesys("same"),
    )
    assert diff_sources(old.sources, new.sources) == Changes(
        kept=("same",), restarted=("secret", "windows"), added=("added",), removed=("gone",)
    )


def test_a_source_that_changes_provider_is_restarted_and_equal_values_written_apart_are_kept() -> None:
    old = config_of(genesys("g"), genesys("h", windows=["30m", "1h"]))
    koreai = {
        "name": "g",
        "provider": "koreai",
        "base_url": "https://bots.kore.ai",
        "account_id": "acc",
        "org_id": "org",
        "client_id": "cid",
        "client_secret": "secret-1234",
    }
    new = config_of(koreai, genesys("h"))  # `windows: [30m, 1h]` is the default: the same resolved config
    assert diff_sources(old.sources, new.sources) == Changes(kept=("h",), restarted=("g",))


def test_a_secret_file_with_new_content_restarts_its_source(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("secret-one-1234\n")
    path = write(tmp_path / "c.yaml", source("a", None, client_secret_file=secret))
    before = load_config(path)
    assert diff_sources(before.sources, load_config(path).sources) == Changes(kept=("a",))
    secret.write_text("secret-two-1234\n")
    assert diff_sources(before.sources, load_config(path).sources) == Changes(restarted=("a",))


# --- what a reload does to the running exporter -------------------------------------------------


@pytest.mark.asyncio
async def test_an_unchanged_source_keeps_its_runner_provider_client_store_counters_and_job(
    started: Started, vendor: Vendor
) -> None:
    exporter, reloader, path, _ = started
    assert exporter.scheduler is not None
    (a,) = [r for r in exporter.runners if r.name == "a"]
    parts = (a, a.provider, a.provider.client, a.store, a.health, a.snapshot)
    job = exporter.scheduler.get_job(a.job_id)
    next_run = job.next_run_time
    tokens = len(vendor.token_requests("id-a"))
    write(path, source("a", "secret-a-1234"), source("b", "secret-b-1234"), source("c", "secret-c-1234"))

    outcome = await reloader.reload()

    assert outcome == Outcome(
        "config reloaded: 3 kept, 0 restarted, 0 added, 0 removed", changes=Changes(kept=("a", "b", "c"))
    )
    (a2,) = [r for r in exporter.runners if r.name == "a"]
    for before, after in zip(
        parts, (a2, a2.provider, a2.provider.client, a2.store, a2.health, a2.snapshot), strict=True
    ):
        assert after is before
    assert exporter.scheduler.get_job(a.job_id) is job and job.next_run_time == next_run
    assert not a.provider.client.http.is_closed
    assert polls(exporter, "a") == 1  # not polled again: a reload that changes nothing costs the vendor nothing
    assert len(vendor.token_requests("id-a")) == tokens
    series = await scrape(exporter)
    assert samples(series, "aht_exporter_polls_total", source="a", result="success") == {
        (("provider", "genesys"), ("result", "success"), ("source", "a")): 1.0
    }


@pytest.mark.asyncio
async def test_a_changed_source_is_closed_and_starts_afresh_with_a_poll_now(
    started: Started, vendor: Vendor, tmp_path: Path
) -> None:
    exporter, reloader, path, _ = started
    assert exporter.scheduler is not None
    (old,) = [r for r in exporter.runners if r.name == "b"]
    secret = tmp_path / "b-secret"
    secret.write_text("secret-b-5678\n")
    write(
        path, source("a", "secret-a-1234"), source("b", None, client_secret_file=secret), source("c", "secret-c-1234")
    )

    outcome = await reloader.reload()

    assert outcome.changes == Changes(kept=("a", "c"), restarted=("b",))
    (new,) = [r for r in exporter.runners if r.name == "b"]
    assert new is not old and new.health is not old.health and new.store is not old.store
    assert old.provider.client.http.is_closed
    assert exporter.scheduler.get_job(old.job_id) is None
    assert exporter.scheduler.get_job(new.job_id) is not None
    await until(lambda: new.health.polled, "the restarted source's first poll")
    # Its first poll asked for a token with the secret from the file, exactly as the vendor wants it.
    request = vendor.token_requests("id-b")[-1]
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"id-b:secret-b-5678").decode()
    assert request.content == b"grant_type=client_credentials"
    # A first poll: the longest window (1h) of closed 30m buckets backfilled, up to the last boundary of
    # its daily cadence (T0 is 10:07 on 2 March).
    query = vendor.queries("id-b")[-1]
    assert query.headers["Authorization"] == "Bearer tok-id-b"
    assert json.loads(query.content) == {
        "interval": "2026-03-01T23:00:00.000Z/2026-03-02T00:00:00.000Z",
        "granularity": "PT30M",
        "groupBy": ["mediaType"],
        "metrics": ["tHandle", "tTalkComplete", "tHeldComplete", "tAcw", "tAnswered", "tAbandon"],
    }
    assert polls(exporter, "b") == 1  # its counters start again, as a new source's do
    assert polls(exporter, "a") == 1


@pytest.mark.asyncio
async def test_a_reload_reads_the_ca_bundle_again_for_the_clients_it_makes(
    started: Started, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter, reloader, path, _ = started
    (kept,) = [r for r in exporter.runners if r.name == "a"]
    old_context = httpclient.tls_context()
    # A refused reload reads nothing more, and changes no client.
    path.write_text("sources: [\n")
    assert not (await reloader.reload()).ok
    assert httpclient.tls_context() is old_context
    # A reload that restarts b: its new client verifies with a context read at the reload; a keeps its own.
    secret = tmp_path / "b-secret"
    secret.write_text("secret-b-5678\n")
    write(
        path, source("a", "secret-a-1234"), source("b", None, client_secret_file=secret), source("c", "secret-c-1234")
    )
    assert (await reloader.reload()).changes == Changes(kept=("a", "c"), restarted=("b",))
    (restarted,) = [r for r in exporter.runners if r.name == "b"]
    new_context = httpclient.tls_context()
    assert new_context is not old_context
    assert restarted.provider.client.http._transport._pool._ssl_context is new_context  # type: ignore[attr-defined]
    assert kept.provider.client.http._transport._pool._ssl_context is old_context  # type: ignore[attr-defined]
    # A CA bundle that cannot be read refuses the reload, one line, and the running context stays.
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing-ca.pem"))
    write(path, source("a", "secret-a-1234"), source("c", "secret-c-1234"))
    outcome = await reloader.reload()
    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.error.startswith("the CA bundle (SSL_CERT_FILE or SSL_CERT_DIR) cannot be read: [Errno 2]")
    assert httpclient.tls_context() is new_context
    assert sorted(r.name for r in exporter.runners) == ["a", "b", "c"]


@pytest.mark.asyncio
async def test_a_removed_source_leaves_metrics_its_job_and_its_connections(started: Started) -> None:
    exporter, reloader, path, _ = started
    assert exporter.scheduler is not None
    (c,) = [r for r in exporter.runners if r.name == "c"]
    assert samples(await scrape(exporter), "aht_exporter_source_up", source="c")
    write(path, source("a", "secret-a-1234"), source("b", "secret-b-1234"))

    outcome = await reloader.reload()

    assert outcome.changes == Changes(kept=("a", "b"), removed=("c",))
    assert [r.name for r in exporter.runners] == ["a", "b"]
    series = await scrape(exporter)
    assert not [key for key in series if ("source", "c") in key[1]]
    assert samples(series, "aht_exporter_source_up", source="a")
    assert exporter.scheduler.get_job(c.job_id) is None
    assert c.provider.client.http.is_closed


@pytest.mark.asyncio
async def test_an_added_source_polls_now_and_a_ready_exporter_stays_ready(started: Started, vendor: Vendor) -> None:
    exporter, reloader, path, _ = started
    assert exporter.ready
    vendor.gates["id-d"] = asyncio.Event()  # d's first poll hangs until the test lets it go
    write(path, *(source(n, f"secret-{n}-1234") for n in "abcd"))

    outcome = await reloader.reload()

    assert outcome.changes == Changes(kept=("a", "b", "c"), added=("d",))
    await until(lambda: vendor.waiting.get("id-d") == 1, "d's first poll")
    assert exporter.ready and exporter.first_polls_pending() == []  # d pending: still ready
    series = await scrape(exporter)
    assert samples(series, "aht_exporter_source_up", source="d") == {(("provider", "genesys"), ("source", "d")): 0.0}
    vendor.gates["id-d"].set()
    await until(lambda: polls(exporter, "d") == 1, "d's first poll to end")
    series = await scrape(exporter)
    assert samples(series, "aht_exporter_source_up", source="d") == {(("provider", "genesys"), ("source", "d")): 1.0}


@pytest.mark.asyncio
async def test_an_exporter_not_yet_ready_waits_for_the_sources_a_reload_adds(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", source("a", "secret-a-1234"))
    exporter = Exporter(load_config(path), clock=FakeClock(T0))  # never started: nothing polls
    write(path, source("a", "secret-a-1234"), source("b", "secret-b-1234"))
    assert (await Reloader(exporter, str(path)).reload()).ok
    assert exporter.first_polls_pending() == ["a", "b"]
    exporter.runners[0].health.record_failure(T0, 0.1, "boom")
    assert exporter.first_polls_pending() == ["b"]
    await exporter.aclose()


@pytest.mark.asyncio
async def test_an_invalid_config_is_refused_with_one_line_and_the_old_one_keeps_running(
    started: Started, caplog: pytest.LogCaptureFixture
) -> None:
    exporter, reloader, path, clock = started
    runners = list(exporter.runners)
    loaded_at = exporter.reload_status.success_timestamp
    assert loaded_at == T0
    path.write_text(path.read_text().replace("group_by: [media_type]", "group_by: [media_type]\n    windows: [7m]", 1))
    clock.advance(60)

    with caplog.at_level(logging.INFO, logger="aht_exporter"):
        outcome = await reloader.reload()

    error = f"{path}: sources[0].windows[0]: 7m is not a multiple of the source's 30m bucket"
    assert outcome == Outcome(f"failed to reload config: {error}", error=error)
    (record,) = [r for r in caplog.records if "reload" in r.getMessage()]
    assert (
        LogfmtFormatter()
        .format(record)
        .endswith(
            f'level=error logger=aht_exporter msg="config reload failed: the running config is kept" error="{error}"'
        )
    )
    assert exporter.runners == runners and all(not r.provider.client.http.is_closed for r in runners)
    assert exporter.reload_status == ReloadStatus(successful=False, success_timestamp=loaded_at)
    series = await scrape(exporter)
    assert series[("aht_exporter_config_last_reload_successful", ())] == 0.0
    assert series[("aht_exporter_config_last_reload_success_timestamp_seconds", ())] == T0

    # Fixed, it loads: the gauges say so, with the time of this reload.
    path.write_text(path.read_text().replace("\n    windows: [7m]", ""))
    assert (await reloader.reload()).ok
    series = await scrape(exporter)
    assert series[("aht_exporter_config_last_reload_successful", ())] == 1.0
    assert series[("aht_exporter_config_last_reload_success_timestamp_seconds", ())] == T0 + 60


@pytest.mark.asyncio
async def test_a_missing_config_file_is_refused_and_nothing_changes(started: Started) -> None:
    exporter, reloader, path, _ = started
    runners = list(exporter.runners)
    path.unlink()
    outcome = await reloader.reload()
    assert outcome.error == f"{path}: cannot read: No such file or directory"
    assert exporter.runners == runners


@pytest.mark.asyncio
async def test_a_refused_config_never_shows_the_secret_it_holds(
    started: Started, caplog: pytest.LogCaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, reloader, path, _ = started
    # YAML quotes the value it cannot build: here, the new secret itself.
    write(path, source("a", "!!int s3cretVALUE99xyz"))
    with caplog.at_level(logging.ERROR, logger="aht_exporter"):
        outcome = await reloader.reload()
    assert outcome.error == f"{path}: line 8: cannot read this value: invalid literal for int() with base 10: '{MASK}'"
    assert "s3cretVALUE99xyz" not in caplog.text
    # The same from a flow mapping, a secret file's text, and an environment variable's value.
    secret_file = tmp_path / "s"
    secret_file.write_text("file-secret-value-9\n")
    monkeypatch.setenv("RELOAD_TEST_SECRET", "env-secret-value-7")
    path.write_text(
        "sources:\n"
        "  - {name: a, provider: genesys, region: mypurecloud.ie, client_id: x, client_secret: !!int flow-secret-3}\n"
        f"  - {{name: b, provider: genesys, region: mypurecloud.ie, client_id: x, client_secret_file: {secret_file}}}\n"
        "  - {name: c, provider: genesys, region: mypurecloud.ie, client_id: x, client_secret: ${RELOAD_TEST_SECRET}}\n"
    )
    assert {"flow-secret-3", "file-secret-value-9", "env-secret-value-7"} <= set(secrets_in_file(str(path)))
    outcome = await reloader.reload()
    assert outcome.error is not None and "flow-secret-3" not in outcome.error


@pytest.mark.asyncio
async def test_after_a_reload_the_new_secrets_are_masked_in_logs_and_poll_errors(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter, reloader, path, _ = started
    installed: list[Redactor] = []
    monkeypatch.setattr("aht_exporter.reload.install_redactor", installed.append)
    write(path, source("a", "secret-a-1234"), source("b", "rotated-b-secret-99"), source("c", "secret-c-1234"))
    assert (await reloader.reload()).ok
    final = installed[-1]
    assert final("echo rotated-b-secret-99") == f"echo {MASK}"
    assert final("echo secret-a-1234") == f"echo {MASK}"
    assert all(r.redactor("rotated-b-secret-99") == MASK for r in exporter.runners)
    # While the reload ran, the old secrets were masked too (a retired poll's last words).
    assert installed[0]("secret-b-1234 rotated-b-secret-99") == f"{MASK} {MASK}"


@pytest.mark.asyncio
async def test_a_reload_during_polls_lets_a_kept_poll_finish_and_cancels_a_changed_one(
    started: Started, vendor: Vendor
) -> None:
    exporter, reloader, path, _ = started
    a, b = exporter.runners[0], exporter.runners[1]
    for client in ("id-a", "id-b"):
        vendor.gates[client] = asyncio.Event()
    second_polls = asyncio.gather(*(exporter._start_poll(r) for r in (a, b)), return_exceptions=True)
    await until(lambda: vendor.waiting.get("id-a") == 1 and vendor.waiting.get("id-b") == 1, "both polls in flight")
    write(path, source("a", "secret-a-1234"), source("b", "secret-b-5678"), source("c", "secret-c-1234"))

    outcome = await asyncio.wait_for(reloader.reload(), WAIT)

    assert outcome.changes == Changes(kept=("a", "c"), restarted=("b",))
    assert b.provider.client.http.is_closed
    assert vendor.waiting["id-a"] == 1  # a's poll goes on, untouched
    vendor.gates["id-a"].set()
    a_result, b_result = await asyncio.wait_for(second_polls, WAIT)
    assert a_result is True and isinstance(b_result, asyncio.CancelledError)
    assert polls(exporter, "a") == 2
    assert b.health.polls["success"] == 1 and sum(b.health.polls.values()) == 1  # the cancelled poll: no count
    vendor.gates["id-b"].set()
    await until(lambda: polls(exporter, "b") == 1, "the new b's first poll")
    assert all(r in exporter.runners for r in exporter._polls.values())  # no task of an old runner left
    assert exporter._retiring == []


@pytest.mark.asyncio
async def test_a_poll_that_ignores_cancellation_is_left_to_shutdown_not_waited_for_forever(
    started: Started, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter, _, path, _ = started
    (c,) = [r for r in exporter.runners if r.name == "c"]
    release = asyncio.Event()

    async def stubborn() -> bool:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # a poll stuck where cancellation does not reach
        return True

    monkeypatch.setattr(c, "poll", stubborn)
    task = exporter._start_poll(c)
    write(path, source("a", "secret-a-1234"), source("b", "secret-b-1234"))
    with caplog.at_level(logging.WARNING, logger="aht_exporter"):
        changes = await asyncio.wait_for(exporter.apply(load_config(path), retire_limit=0.05), WAIT)
    assert changes.removed == ("c",)
    assert "reload: cancelled polls have not ended yet" in caplog.text
    assert task in exporter._polls  # still tracked: shutdown waits for it, then cancels it again
    release.set()
    await asyncio.wait_for(task, WAIT)


@pytest.mark.asyncio
async def test_a_failure_while_applying_changes_nothing_and_closes_what_it_made(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter, reloader, path, _ = started
    runners = list(exporter.runners)
    made: list[Any] = []
    real = exporter._make_runner

    def make(source: Any) -> Any:
        made.append(real(source))
        return made[-1]

    def broken(config: Config) -> None:
        raise RuntimeError("check failed")

    monkeypatch.setattr(exporter, "_make_runner", make)
    monkeypatch.setattr("aht_exporter.scheduler._check_sources", broken)
    write(path, source("a", "secret-a-1234"), source("b", "secret-b-5678"), source("e", "secret-e-1234"))
    outcome = await reloader.reload()
    assert outcome.error == "internal error: RuntimeError: check failed"
    assert exporter.runners == runners and exporter.reload_status.successful is False
    assert len(made) == 2 and all(r.provider.client.http.is_closed for r in made)


@pytest.mark.asyncio
async def test_a_loader_that_crashes_is_a_refused_reload_with_the_secret_masked(
    started: Started, caplog: pytest.LogCaptureFixture
) -> None:
    exporter, _, path, _ = started
    write(path, source("a", "brand-new-secret-42"))

    def crash(p: str) -> Config:
        raise KeyError("brand-new-secret-42")

    with caplog.at_level(logging.INFO, logger="aht_exporter"):
        outcome = await Reloader(exporter, str(path), load=crash).reload()
    assert outcome.error == f"internal error: KeyError: '{MASK}'"
    assert [r.getMessage() for r in caplog.records] == ["config reload failed: the running config is kept"]
    assert "brand-new-secret-42" not in caplog.text
    assert [r.name for r in exporter.runners] == ["a", "b", "c"]


@pytest.mark.asyncio
async def test_two_reloads_at_once_run_one_after_the_other(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", source("a", "secret-a-1234"))
    exporter = Exporter(load_config(path), clock=FakeClock(T0))
    running = 0
    most = 0
    lock = threading.Lock()

    def slow_load(p: str) -> Config:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)  # a slow network mount, in the loading thread
        with lock:
            running -= 1
        return load_config(p)

    reloader = Reloader(exporter, str(path), load=slow_load)
    outcomes = await asyncio.wait_for(asyncio.gather(*(reloader.reload() for _ in range(3))), WAIT)
    assert most == 1 and all(o.ok for o in outcomes)
    await exporter.aclose()


@pytest.mark.asyncio
async def test_a_reload_outlives_a_caller_that_gives_up(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", source("a", "secret-a-1234"))
    exporter = Exporter(load_config(path), clock=FakeClock(T0))
    write(path, source("a", "secret-a-1234"), source("b", "secret-b-1234"))
    reloader = Reloader(exporter, str(path))
    caller = asyncio.create_task(reloader.reload())
    await asyncio.sleep(0)
    caller.cancel()
    await until(lambda: [r.name for r in exporter.runners] == ["a", "b"], "the reload to end")
    await exporter.aclose()


@pytest.mark.asyncio
async def test_the_demo_has_nothing_to_reload_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(T0)
    exporter = Exporter(config_of(genesys("g")), clock=clock)
    clock.advance(30)
    with caplog.at_level(logging.INFO, logger="aht_exporter"):
        outcome = await Reloader(exporter, None).reload()
    assert outcome == Outcome("nothing to reload: --demo has no config file")
    assert [r.getMessage() for r in caplog.records] == ["config reload: nothing to reload: --demo has no config file"]
    assert exporter.reload_status == ReloadStatus(True, T0 + 30)
    await exporter.aclose()


# --- the endpoint -------------------------------------------------------------------------------


Served = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest_asyncio.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Path, Exporter, Served]]:
    path = write(tmp_path / "c.yaml", source("a", "secret-a-1234"))
    exporter = Exporter(load_config(path), clock=FakeClock(T0))
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def serve(**kwargs: Any) -> httpx.AsyncClient:
        runner, bound = await start_server(exporter, "127.0.0.1:0", **kwargs)
        client = httpx.AsyncClient(base_url=f"http://{bound[0]}")
        cleanups.extend([client.aclose, runner.cleanup])
        return client

    yield path, exporter, serve
    for cleanup in cleanups:
        await cleanup()
    await exporter.aclose()


@pytest.mark.asyncio
async def test_post_reload_answers_200_then_500_with_the_reason(served: tuple[Path, Exporter, Served]) -> None:
    path, exporter, serve = served
    client = await serve(reloader=Reloader(exporter, str(path)))
    write(path, source("a", "secret-a-1234"), source("b", "secret-b-1234"))
    r = await client.post("/-/reload")
    assert (r.status_code, r.text) == (200, "config reloaded: 1 kept, 0 restarted, 1 added, 0 removed\n")
    path.write_text("sources: []\n")
    r = await client.put("/-/reload")
    assert (r.status_code, r.text) == (
        500,
        f"failed to reload config: {path}: sources: must be a non-empty list of sources\n",
    )
    assert [x.name for x in exporter.runners] == ["a", "b"]
    r = await client.get("/-/reload")
    assert (r.status_code, r.headers["Allow"], r.text) == (405, "POST, PUT", "Only POST or PUT requests allowed\n")


@pytest.mark.asyncio
async def test_post_reload_without_the_lifecycle_flag_is_403_and_changes_nothing(
    served: tuple[Path, Exporter, Served],
) -> None:
    path, exporter, serve = served
    client = await serve()
    write(path, source("a", "secret-a-1234"), source("b", "secret-b-1234"))
    r = await client.post("/-/reload")
    assert (r.status_code, r.text) == (403, "Lifecycle API is not enabled.\n")
    assert [x.name for x in exporter.runners] == ["a"]


@pytest.mark.asyncio
async def test_post_reload_is_guarded_by_the_web_configs_basic_auth(served: tuple[Path, Exporter, Served]) -> None:
    import bcrypt

    from aht_exporter.webconfig import WebConfig

    path, exporter, serve = served
    users = {"prom": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4))}
    client = await serve(web_config=WebConfig(users=users), reloader=Reloader(exporter, str(path)))
    write(path, source("a", "secret-a-1234"), source("b", "secret-b-1234"))
    assert (await client.post("/-/reload")).status_code == 401
    assert [x.name for x in exporter.runners] == ["a"]
    assert (await client.post("/-/reload", auth=("prom", "pw"))).status_code == 200
    assert [x.name for x in exporter.runners] == ["a", "b"]


def test_the_telemetry_path_cannot_take_the_reload_endpoint() -> None:
    with pytest.raises(ValueError, match="already the path of another endpoint"):
        check_telemetry_path("/-/reload")
