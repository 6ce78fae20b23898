"""Config reload without a restart: SIGHUP, or `POST /-/reload` with `--web.enable-lifecycle` (issue 15).

A reload re-reads the config file and every `*_file` secret, as at start. A config that does not load is
refused with one log line and the running one goes on; one that loads is applied by `Exporter.apply`
(unchanged sources untouched, changed ones restarted, removed ones gone, added ones started). Reloads are
serialised, and run in a task of their own, so that a client that hangs up cannot stop one half way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from aht_exporter.config import (
    MAX_SECRET_FILE_BYTES,
    Config,
    load_yaml,
    read_bounded,
    read_config_text,
)
from aht_exporter.exposition import ReloadStatus
from aht_exporter.httpclient import reload_tls_context
from aht_exporter.logs import install_redactor
from aht_exporter.model import ConfigError
from aht_exporter.redact import Redactor
from aht_exporter.registry import all_secret_keys, load_config
from aht_exporter.scheduler import Changes, Exporter

log = logging.getLogger("aht_exporter")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one reload did: `error` is None when it succeeded; `message` is its one line for a human."""

    message: str
    error: str | None = None
    changes: Changes | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Reloader:
    """Reloads `path` into `exporter`, one reload at a time. `path` None: the demo, which has no file."""

    def __init__(self, exporter: Exporter, path: str | None, *, load: Callable[[str], Config] = load_config) -> None:
        self.exporter = exporter
        self.path = path
        self._load = load
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Outcome]] = set()

    async def reload(self) -> Outcome:
        """Reload, after any reload already running. The reload runs to its end even if the caller is
        cancelled (an HTTP client that hangs up): half a reload would be worse than either config."""
        return await asyncio.shield(self.request())

    def request(self) -> asyncio.Task[Outcome]:
        """Start a reload (after any reload already running) without waiting for it: for SIGHUP."""
        task = asyncio.get_running_loop().create_task(self._serialised(), name="config reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        """At shutdown: cancel the reloads still running (they are between awaits, where that is safe)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)

    async def _serialised(self) -> Outcome:
        async with self._lock:
            return await self._reload()

    async def _reload(self) -> Outcome:
        exporter = self.exporter
        if self.path is None:
            message = "nothing to reload: --demo has no config file"
            log.info(f"config reload: {message}")
            exporter.set_reload_status(ReloadStatus(True, exporter.clock.now()))
            return Outcome(message)
        try:
            # Off the event loop: a config file or a secret file on a slow network mount must not stall
            # the scrapes and polls; nor the CA bundle, read again for the clients the reload makes.
            config = await asyncio.to_thread(self._load, self.path)
            await asyncio.to_thread(reload_tls_context)  # a ConfigError when it cannot be read
        except ConfigError as exc:
            error = str(exc)
        except Exception as exc:  # a bug in loading: refused the same way, never a dead daemon
            # One masked line and no traceback: a traceback's text could quote the new file, whose
            # secrets no redactor knows.
            error = f"internal error: {type(exc).__name__}: {exc}"
        else:
            return await self._apply(config)
        # The new file is read again for what to mask: off the event loop too.
        return self._refuse(await asyncio.to_thread(self._shown, error, self.path))

    async def _apply(self, config: Config) -> Outcome:
        exporter = self.exporter
        old = exporter.config
        # While the reload runs, lines may name either config's secrets (a retired poll's last words).
        install_redactor(Redactor.for_config(Config.model_construct(sources=[*old.sources, *config.sources])))
        try:
            changes = await exporter.apply(config)
        except Exception as exc:  # apply raises only before it has changed anything
            install_redactor(Redactor.for_config(old))
            log.exception("config reload crashed")
            return self._refuse(exporter.redactor.shown(f"internal error: {type(exc).__name__}: {exc}"))
        install_redactor(Redactor.for_config(config))
        exporter.set_reload_status(ReloadStatus(True, exporter.clock.now()))
        counts = {
            "kept": len(changes.kept),
            "restarted": len(changes.restarted),
            "added": len(changes.added),
            "removed": len(changes.removed),
        }
        named = {
            f"{k}_sources": ",".join(getattr(changes, k))
            for k in ("restarted", "added", "removed")
            if getattr(changes, k)
        }
        log.info("config reloaded", extra={"file": self.path, **counts, **named})
        message = ", ".join(f"{n} {k}" for k, n in counts.items())
        return Outcome(f"config reloaded: {message}", changes=changes)

    def _refuse(self, error: str) -> Outcome:
        exporter = self.exporter
        exporter.set_reload_status(ReloadStatus(False, exporter.reload_status.success_timestamp))
        log.error("config reload failed: the running config is kept", extra={"error": error})
        return Outcome(f"failed to reload config: {error}", error=error)

    def _shown(self, error: str, path: str) -> str:
        """The error as it may be logged and answered: the running config's secrets masked, and whatever
        the new file holds under a secret key, which no config object knows yet (a value YAML could not
        read is quoted by the error: `client_secret: !!int ...`)."""
        masked = Redactor(list(secrets_in_file(path)), runtime=None)(error)
        return self.exporter.redactor.shown(masked)


# `key: value` anywhere, in block or flow style; the value is looked at, not consumed, so that the next key
# of a flow mapping on the same line is found too.
_PAIR = re.compile(r"""(?<![\w-])["']?(?P<key>[A-Za-z0-9_]+)["']?[ \t]*:[ \t]+(?=(?P<value>[^\n]*))""")
_FLOW_END = re.compile(r"[,}\]]")
_TAG = re.compile(r"^!\S*\s+")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def secrets_in_file(path: str) -> Iterator[str]:
    """What may be a secret in a config file that did not load, best effort and never failing: each value
    under a secret key, read from the lines as written (the YAML may not parse) and from the YAML when it
    does; the text of each `<key>_file` it names; and the environment variables those values name."""
    keys = all_secret_keys()
    try:
        text = read_config_text(path)
    except ConfigError:
        return
    pairs: list[tuple[str, object]] = []
    for m in _PAIR.finditer(text):
        rest = m["value"].rstrip()
        pairs += [(m["key"], rest), (m["key"], _FLOW_END.split(rest, maxsplit=1)[0].strip())]
    with contextlib.suppress(Exception):  # the file's own error is what is reported: this is only a mask
        pairs += list(_pairs(load_yaml(text)))
    for key, value in pairs:
        if not isinstance(value, str) or not value:
            continue
        if key in keys:
            yield from _values(value)
        elif key.endswith("_file") and key.removesuffix("_file") in keys:
            for file in _values(value):
                try:
                    yield read_bounded(file, MAX_SECRET_FILE_BYTES, "a secret file").decode().rstrip("\r\n")
                except Exception:  # unreadable: the file's own error says so, and quotes no byte of it
                    continue


def _values(written: str) -> Iterator[str]:
    """A value as written, without a YAML tag, a comment or quotes; or, for a value that names ${VAR}s,
    their values (the reference itself is no secret, and the error may name the variable)."""
    names = _VAR.findall(written)
    if names:
        yield from (os.environ[var] for var in names if os.environ.get(var))
        return
    yield written
    value = _TAG.sub("", written).split(" #", 1)[0].strip()
    yield value
    yield value.strip("\"'")


def _pairs(node: object) -> Iterator[tuple[str, object]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key), value
            yield from _pairs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _pairs(item)
