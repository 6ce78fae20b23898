"""The SQLite state under --storage.path: what a restart gets back, and every way the file can be bad.

A bad store (truncated, garbage, another schema version, a read-only directory, locked by another
process) is one log line and a count, and the exporter goes on from memory. A kill mid-write loses
nothing already committed."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aht_exporter.model import Field, Sums, make_labels
from aht_exporter.state import FILE_NAME, SCHEMA_VERSION, StateStore
from aht_exporter.store import NOTHING, SourceStore
from aht_exporter.timebuckets import Duration, fetch_span
from tests.unit.test_totals import DELAY, EVERY, Q1, Q2, START, Vendor, new_store, poll

IDENTITY = "genesys|300|queue"
REFRESH = 1800


def polled_store(vendor: Vendor, polls: int, state: StateStore | None = None) -> SourceStore:
    store = new_store()
    for k in range(polls):
        poll(store, vendor, START + k * EVERY + DELAY, REFRESH)
        if state is not None:
            assert state.save("g1", IDENTITY, store.take_changes())
    return store


def busy_vendor() -> Vendor:
    vendor = Vendor()
    for i, t in enumerate(range(START - 7200, START + 7200, 300)):
        vendor.set(t, Q1, 1000 * (i + 1), 1 + i % 3)
        vendor.set(t, Q2, 7, 1)
    return vendor


def same(a: SourceStore, b: SourceStore) -> None:
    assert a._buckets == b._buckets
    assert (a.totals, a.last_seen) == (b.totals, b.last_seen)
    assert (a.fetched_until, a.final_until, a.unrecovered) == (b.fetched_until, b.final_until, b.unrecovered)


def test_a_restart_gets_back_every_bucket_and_total_and_fetches_only_what_is_missing(tmp_path: Path) -> None:
    vendor = busy_vendor()
    state = StateStore(tmp_path)
    before = polled_store(vendor, 12, state)
    assert before.totals[Q1][Field.CONTACTS_HANDLED] > 0
    state.close()

    after = new_store()
    reopened = StateStore(tmp_path)
    loaded = reopened.load("g1", IDENTITY)
    assert loaded is not None
    after.restore(loaded)
    same(before, after)
    # Down for 20 minutes: the first poll after the restart asks for what it missed and the refresh span,
    # not for the longest window.
    data_end = START + 15 * EVERY
    span = fetch_span(
        data_end, bucket=300, longest_window=3600, refresh=REFRESH, every=EVERY, fetched_until=after.fetched_until
    )
    assert span == (START + 12 * EVERY - REFRESH, data_end)
    # And the totals go on as if it had never stopped.
    unbroken = polled_store(vendor, 16)
    poll(after, vendor, START + 15 * EVERY + DELAY, REFRESH)
    same(unbroken, after)


def test_only_what_a_poll_changed_is_written(tmp_path: Path) -> None:
    vendor = busy_vendor()
    state = StateStore(tmp_path)
    store = polled_store(vendor, 3, state)
    poll(store, vendor, START + 3 * EVERY + DELAY, REFRESH)
    changes = store.take_changes()
    assert changes.replaced == (START + 3 * EVERY - REFRESH, START + 3 * EVERY)
    assert set(changes.buckets) == set(range(START + 3 * EVERY - REFRESH, START + 3 * EVERY, 300))
    assert set(changes.totals) == {Q1, Q2}  # one bucket became final: both label sets in it
    assert store.take_changes().buckets == {}  # nothing new since


def test_a_source_whose_grain_changed_starts_afresh(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = StateStore(tmp_path)
    polled_store(busy_vendor(), 3, state)
    with caplog.at_level(logging.WARNING):
        assert state.load("g1", "genesys|900|queue") is None
    assert "provider or grain changed" in caplog.text
    assert state.load("g1", IDENTITY) is None  # dropped, not kept for a change back


def test_removed_sources_are_forgotten(tmp_path: Path) -> None:
    state = StateStore(tmp_path)
    polled_store(busy_vendor(), 2, state)
    state.forget(["other"])
    assert state.load("g1", IDENTITY) is None


def test_memory_only_reads_and_writes_nothing(tmp_path: Path) -> None:
    state = StateStore(None)
    assert not state.enabled
    assert state.load("g1", IDENTITY) is None
    assert not state.save("g1", IDENTITY, polled_store(busy_vendor(), 2).take_changes())
    assert state.errors == 0


def bad_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / FILE_NAME
    if kind == "garbage":
        path.write_bytes(os.urandom(4096))
    elif kind == "truncated":
        state = StateStore(tmp_path)
        polled_store(busy_vendor(), 12, state)
        state.close()
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "text":
        path.write_text("not a database\n")
    elif kind == "other-schema":
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE t (x)")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        db.commit()
        db.close()


@pytest.mark.parametrize("kind", ["garbage", "truncated", "text", "other-schema"])
def test_a_bad_store_file_is_one_line_and_the_exporter_goes_on_from_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    bad_file(tmp_path, kind)
    with caplog.at_level(logging.ERROR):
        state = StateStore(tmp_path)
        store = polled_store(busy_vendor(), 3)  # polling goes on
        assert state.load("g1", IDENTITY) is None
        assert not state.save("g1", IDENTITY, store.take_changes())
    records = [r for r in caplog.records if r.name == "aht_exporter.state"]
    assert len(records) == 1, caplog.text
    assert records[0].getMessage() == "cannot open the store: polling and serving go on from memory"
    error = records[0].__dict__["error"]
    assert str(tmp_path / FILE_NAME) in error
    if kind == "other-schema":
        assert f"schema version {SCHEMA_VERSION + 1}" in error
    assert state.errors == 1 and not state.enabled


def test_a_store_where_nothing_can_be_written_is_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """--storage.path under a regular file: no directory can be made there, not even by root (who writes to
    read-only directories, so a chmod would prove nothing where CI runs)."""
    (tmp_path / "not-a-directory").write_text("")
    with caplog.at_level(logging.ERROR):
        state = StateStore(tmp_path / "not-a-directory" / "data")
    assert not state.enabled and state.errors == 1
    (record,) = [r for r in caplog.records if r.name == "aht_exporter.state"]
    assert record.getMessage() == "cannot open the store: polling and serving go on from memory"
    assert "Not a directory" in record.__dict__["error"]


def test_a_store_locked_by_another_process_fails_the_save_not_the_poll(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = StateStore(tmp_path, busy_timeout=0.05)
    store = polled_store(busy_vendor(), 2, state)
    other = sqlite3.connect(tmp_path / FILE_NAME, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.ERROR):
            poll(store, busy_vendor(), START + 2 * EVERY + DELAY, REFRESH)
            assert not state.save("g1", IDENTITY, store.take_changes())
            assert not state.save("g1", IDENTITY, store.take_changes())
        assert state.errors == 2
        records = [r for r in caplog.records if r.name == "aht_exporter.state"]
        assert [r.getMessage() for r in records] == ["cannot save a source's state: it is kept in memory only"]
        assert "database is locked" in records[0].__dict__["error"]  # once per reason, not per poll
    finally:
        other.execute("ROLLBACK")
        other.close()
    # The saves that failed lost nothing: the next one writes the whole state.
    poll(store, busy_vendor(), START + 3 * EVERY + DELAY, REFRESH)
    assert state.save("g1", IDENTITY, store.take_changes(everything=True))
    loaded = state.load("g1", IDENTITY)
    assert loaded is not None
    restored = new_store()
    restored.restore(loaded)
    same(store, restored)


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from aht_exporter.state import StateStore
    from tests.unit.test_totals import DELAY, EVERY, START, new_store, poll
    from tests.unit.test_state import busy_vendor, IDENTITY, REFRESH
    state = StateStore(Path({directory!r}))
    store, vendor = new_store(), busy_vendor()
    k = 0
    while True:
        poll(store, vendor, START + k * EVERY + DELAY, REFRESH)
        state.save("g1", IDENTITY, store.take_changes())
        k += 1
        if k == 3:
            print("writing", flush=True)
    """
)


def test_a_kill_during_writes_loses_nothing_committed(tmp_path: Path) -> None:
    """SIGKILL a process that saves poll after poll, as fast as it can: the file opens, and what it holds
    is exactly the state after some whole poll (every total matches a replay up to that poll)."""
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(root=root, directory=str(tmp_path))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "writing\n"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    state = StateStore(tmp_path)
    assert state.enabled and state.errors == 0
    loaded = state.load("g1", IDENTITY)
    assert loaded is not None and loaded.fetched_until is not None
    polls = (loaded.fetched_until - START) // EVERY + 1
    replay = polled_store(busy_vendor(), polls)
    restored = new_store()
    restored.restore(loaded)
    same(replay, restored)


def test_a_store_with_labels_and_fields_of_every_kind_round_trips(tmp_path: Path) -> None:
    labels = make_labels(queue='q"1\\', media_type="voice", agent="ä\u00a0b")
    store = SourceStore(bucket=300, windows=[Duration.parse("30m")], fields=frozenset(Field))
    from aht_exporter.model import Bucket

    store.replace(START - 1800, START, [Bucket(START - 300, START, labels, dict.fromkeys(Field, 1.5))])
    store.finalize(START - 1800)
    state = StateStore(tmp_path)
    assert state.save("g1", IDENTITY, store.take_changes())
    loaded = state.load("g1", IDENTITY)
    assert loaded is not None
    again = SourceStore(bucket=300, windows=[Duration.parse("30m")], fields=frozenset(Field))
    again.restore(loaded)
    assert again._buckets == store._buckets
    assert again.totals == store.totals == {labels: NOTHING}
    assert again._buckets[START - 300][labels] == Sums(*[1_500_000] * len(Field))
