"""State that survives a restart: each source's buckets, running totals and progress, in SQLite.

Under `--storage.path` (default `data/`), one file, `aht-exporter.db`, written with the standard library's
`sqlite3`. After a restart, a source whose grain is unchanged (`identity`) gets back its buckets, so its first
poll fetches only what is missing, and its totals, so the `_total` counters go on from where they were rather
than resetting. A source whose provider or grain changed starts afresh (docs/exact-ranges.md).

Every save is one transaction (a SIGKILL mid-write loses nothing already committed: SQLite's journal rolls
the half-written one back), and only what the poll changed is written: the re-fetched buckets, the totals of
the label sets that changed, and the few numbers of progress. A store that cannot be opened or written
(corrupt, another schema, locked, read-only, disk full) is one log line and `aht_exporter_storage_errors_total`:
polling and serving go on from memory, as with `--storage.path=""`.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import msgspec

from aht_exporter.model import Field, Labels
from aht_exporter.store import Changes, SourceState

log = logging.getLogger(__name__)

FILE_NAME = "aht-exporter.db"
SCHEMA_VERSION = 1
BUSY_TIMEOUT = 5.0  # seconds to wait for a lock held by another process before giving up on a write

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    name TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    fetched_until INTEGER,
    final_until INTEGER,
    unrecovered INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS buckets (
    source TEXT NOT NULL,
    start INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (source, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS backfill (
    source TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    done_until INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS backfill_buckets (
    source TEXT NOT NULL,
    start INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (source, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS totals (
    source TEXT NOT NULL,
    labels BLOB NOT NULL,
    last_seen INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (source, labels)
) WITHOUT ROWID;
"""

# A bucket's or a label set's values: [[label, value], ...] and {field: millionths}.
_Encoded = list[tuple[list[tuple[str, str]], dict[str, int]]]
_encode = msgspec.json.Encoder().encode
_decode_bucket = msgspec.json.Decoder(_Encoded).decode
_decode_labels = msgspec.json.Decoder(list[tuple[str, str]]).decode
_decode_values = msgspec.json.Decoder(dict[str, int]).decode


class StorageError(Exception):
    """The store cannot be used: the message says why, in one line."""


def _labels_key(labels: Labels) -> bytes:
    return _encode([list(pair) for pair in labels])


class StateStore:
    """The SQLite file, or nothing (`path` None: memory only). Thread-safe: writes run off the event loop."""

    def __init__(self, directory: Path | None, *, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.directory = directory
        self.busy_timeout = busy_timeout
        self.errors = 0  # failed opens, loads and saves: aht_exporter_storage_errors_total
        self.last_error: str | None = None
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        if directory is not None:
            try:
                self._db = self._open(directory / FILE_NAME)
            except (sqlite3.Error, OSError, StorageError) as exc:
                self._failed("cannot open the store: polling and serving go on from memory", exc)

    @property
    def enabled(self) -> bool:
        return self._db is not None

    @property
    def path(self) -> Path | None:
        return None if self.directory is None else self.directory / FILE_NAME

    def _open(self, path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # a reader never blocks the writer, and commits are atomic
            db.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across a process kill, cheap
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
            if version == 0 and tables == 0:  # a new file: created in one transaction, version included
                db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version = {SCHEMA_VERSION};COMMIT;")
            elif version != SCHEMA_VERSION:
                raise StorageError(
                    f"{path} has schema version {version}, this exporter reads version {SCHEMA_VERSION}: "
                    "move it away to start afresh"
                )
            result = db.execute("PRAGMA quick_check").fetchone()[0]
            if result != "ok":
                raise StorageError(f"{path} is damaged ({result}): move it away to start afresh")
        except BaseException:
            db.close()
            raise
        return db

    def _failed(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        reason = str(exc) if isinstance(exc, StorageError) else f"{self.path}: {exc}"
        if reason != self.last_error:  # once per reason, not once per poll
            log.error(what, extra={"error": reason})
        self.last_error = reason

    def load(self, source: str, identity: str) -> SourceState | None:
        """The source's saved state, or None: nothing saved, another identity (then it is dropped), or the
        store unusable."""
        if self._db is None:
            return None
        try:
            with self._lock:
                return self._load(self._db, source, identity)
        except (sqlite3.Error, msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            self._failed("cannot read a source's saved state: it starts afresh", exc)
            return None

    def _load(self, db: sqlite3.Connection, source: str, identity: str) -> SourceState | None:
        row = db.execute(
            "SELECT identity, fetched_until, final_until, unrecovered FROM sources WHERE name = ?", (source,)
        ).fetchone()
        if row is None:
            return None
        if row[0] != identity:
            log.warning(
                "the source's provider or grain changed since its state was saved: it starts afresh",
                extra={"source": source},
            )
            with _transaction(db):
                _delete_source(db, source)
            return None
        state = SourceState(fetched_until=row[1], final_until=row[2], unrecovered=row[3])
        for start, data in db.execute("SELECT start, data FROM buckets WHERE source = ?", (source,)):
            state.buckets[start] = _decode_groups(data)
        for labels_blob, last_seen, data in db.execute(
            "SELECT labels, last_seen, data FROM totals WHERE source = ?", (source,)
        ):
            labels = tuple(_decode_labels(labels_blob))
            state.totals[labels] = _decode_values(data)
            state.last_seen[labels] = last_seen
        return state

    def save(self, source: str, identity: str, changes: Changes) -> bool:
        """Write one poll's changes in one transaction; False (logged once, counted) when it failed."""
        if self._db is None:
            return False
        try:
            with self._lock, _transaction(self._db):
                self._save(self._db, source, identity, changes)
        except sqlite3.Error as exc:
            self._failed("cannot save a source's state: it is kept in memory only", exc)
            return False
        if self.last_error is not None:
            log.info("the store is written again", extra={"path": str(self.path)})
            self.last_error = None
        return True

    @staticmethod
    def _save(db: sqlite3.Connection, source: str, identity: str, c: Changes) -> None:
        db.execute(
            "INSERT INTO sources (name, identity, fetched_until, final_until, unrecovered) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET identity = excluded.identity, fetched_until = excluded.fetched_until, "
            "final_until = excluded.final_until, unrecovered = excluded.unrecovered",
            (source, identity, c.fetched_until, c.final_until, c.unrecovered),
        )
        if c.everything:
            db.execute("DELETE FROM buckets WHERE source = ?", (source,))
            db.execute("DELETE FROM totals WHERE source = ?", (source,))
        elif c.replaced is not None:
            db.execute("DELETE FROM buckets WHERE source = ? AND start >= ? AND start < ?", (source, *c.replaced))
        db.executemany(
            "INSERT OR REPLACE INTO buckets (source, start, data) VALUES (?, ?, ?)",
            ((source, start, _encode_bucket(groups)) for start, groups in c.buckets.items()),
        )
        if c.pruned_before is not None:
            db.execute("DELETE FROM buckets WHERE source = ? AND start < ?", (source, c.pruned_before))
        db.executemany(
            "INSERT OR REPLACE INTO totals (source, labels, last_seen, data) VALUES (?, ?, ?, ?)",
            (
                (source, _labels_key(labels), last_seen, _encode({str(f): v for f, v in values.items()}))
                for labels, (last_seen, values) in c.totals.items()
            ),
        )
        db.executemany(
            "DELETE FROM totals WHERE source = ? AND labels = ?",
            ((source, _labels_key(labels)) for labels in c.forgotten),
        )

    # --- backfill (aht_exporter/backfill.py): fetched history, kept so that a stopped run resumes ---------

    def has_state(self, source: str) -> bool:
        """Whether the source has live state: the exporter has polled it with this store."""
        if self._db is None:
            return False
        with self._lock:
            return self._db.execute("SELECT 1 FROM sources WHERE name = ?", (source,)).fetchone() is not None

    def backfill_resume(self, source: str, identity: str, start: int, end: int) -> int:
        """Where a backfill of [start, end) for the source stands: `start` when none was begun; an earlier run
        for another span or grain is dropped. Raises sqlite3.Error: a backfill without its store stops."""
        if self._db is None:
            return start
        with self._lock, _transaction(self._db):
            row = self._db.execute(
                "SELECT identity, start, end, done_until FROM backfill WHERE source = ?", (source,)
            ).fetchone()
            if row is not None and tuple(row[:3]) == (identity, start, end):
                return int(row[3])
            _delete_backfill(self._db, source)
            self._db.execute(
                "INSERT INTO backfill (source, identity, start, end, done_until) VALUES (?, ?, ?, ?, ?)",
                (source, identity, start, end, start),
            )
        return start

    def backfill_save(
        self, source: str, done_until: int, buckets: Mapping[int, Mapping[Labels, Mapping[str, int]]]
    ) -> None:
        """One fetched chunk and the progress it makes, in one transaction."""
        if self._db is None:
            return
        with self._lock, _transaction(self._db):
            self._db.executemany(
                "INSERT OR REPLACE INTO backfill_buckets (source, start, data) VALUES (?, ?, ?)",
                ((source, t, _encode_bucket(groups)) for t, groups in buckets.items()),
            )
            self._db.execute("UPDATE backfill SET done_until = ? WHERE source = ?", (done_until, source))

    def backfill_buckets(self, source: str) -> Iterator[tuple[int, dict[Labels, dict[str, int]]]]:
        """The fetched buckets, oldest first, one at a time (a month of a big tenant is more than memory)."""
        if self._db is None:
            return
        with self._lock:
            starts = [
                t
                for (t,) in self._db.execute(
                    "SELECT start FROM backfill_buckets WHERE source = ? ORDER BY start", (source,)
                )
            ]
        for t in starts:
            with self._lock:
                (data,) = self._db.execute(
                    "SELECT data FROM backfill_buckets WHERE source = ? AND start = ?", (source, t)
                ).fetchone()
            yield t, _decode_groups(data)

    def backfill_finish(self, source: str, identity: str, changes: Changes) -> None:
        """Hand the backfill's end state to the live exporter and drop the backfill's rows, at once."""
        if self._db is None:
            return
        with self._lock, _transaction(self._db):
            self._save(self._db, source, identity, changes)
            _delete_backfill(self._db, source)

    def forget(self, sources: Iterable[str]) -> None:
        """Drop the state of sources that are no longer configured (at start and at a reload)."""
        if self._db is None:
            return
        keep = set(sources)
        try:
            with self._lock, _transaction(self._db):
                names = [name for (name,) in self._db.execute("SELECT name FROM sources") if name not in keep]
                for name in names:
                    _delete_source(self._db, name)
        except sqlite3.Error as exc:
            self._failed("cannot drop the state of removed sources", exc)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None


def _decode_groups(data: bytes) -> dict[Labels, dict[str, int]]:
    return {tuple(labels): dict(values) for labels, values in _decode_bucket(data)}


def identity(provider: str, bucket: int, group_by: Iterable[str] | None, fields: Iterable[Field]) -> str:
    """What a source's saved state is only good for: the same provider, bucket size, grouping and fields.
    Any change there and the buckets and totals mean something else: the source starts afresh."""
    return _encode(
        {
            "provider": provider,
            "bucket": bucket,
            "group_by": sorted(group_by) if group_by is not None else None,
            "fields": sorted(f.value for f in fields),
        }
    ).decode()


def _encode_bucket(groups: Mapping[Labels, Mapping[str, int]]) -> bytes:
    return _encode(
        [([list(pair) for pair in labels], {str(f): v for f, v in values.items()}) for labels, values in groups.items()]
    )


def _delete_source(db: sqlite3.Connection, source: str) -> None:
    for table, key in (("sources", "name"), ("buckets", "source"), ("totals", "source")):
        db.execute(f"DELETE FROM {table} WHERE {key} = ?", (source,))  # the names are fixed above


def _delete_backfill(db: sqlite3.Connection, source: str) -> None:
    for table in ("backfill", "backfill_buckets"):
        db.execute(f"DELETE FROM {table} WHERE source = ?", (source,))  # the names are fixed above


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error (autocommit mode: `isolation_level=None`)."""
    if db.in_transaction:
        yield
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
