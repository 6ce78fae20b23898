"""The YAML config: `defaults` + `sources`, validated up front into one readable line per problem.

Every failure is a ConfigError whose text is `<file>: <key path>: <what is wrong>`, e.g.
`config.yaml: sources[0].windows[1]: 7m is not a multiple of the source's 30m bucket`.

A config file is read as hostile input (issue 12): it is bounded in bytes, in values once its YAML aliases
are expanded, in nesting, and every duration is bounded to what the scheduler and the provider can serve,
so that no file crashes, hangs or exhausts the exporter, at --check-config or later. The bounds are the
MAX_* constants below; the README's "Limits" section lists them.
"""

from __future__ import annotations

import os
import re
import reprlib
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import httpx
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
)

from aht_exporter.model import MAX_LABEL_VALUE, ConfigError, Labels
from aht_exporter.net import is_loopback
from aht_exporter.timebuckets import Duration

FIVE_MINUTES = 300
M = TypeVar("M", bound=BaseModel)

# --- limits: every bound a config is held to, with what the user sees when it is hit ------------------
# The config file's bytes: read at most this many (and one more, to tell that it is larger).
MAX_CONFIG_FILE_BYTES = 1 << 20
# One `x_file:` secret (a token or key is a few hundred bytes; /dev/zero is endless).
MAX_SECRET_FILE_BYTES = 64 << 10
# Values (mappings, lists, keys and scalars) once every YAML alias is expanded: a billion laughs is a
# few hundred bytes that expand to 10^9 values. Far above any real config (a source listing thousands of
# agents), and small enough to be read in well under a second.
MAX_CONFIG_VALUES = 100_000
# Characters in the config's values once every alias is expanded and every ${VAR} substituted.
MAX_CONFIG_TEXT = 4 << 20
# Mappings and lists nested in one another (a real config nests 4 deep: sources, a source, windows).
MAX_CONFIG_DEPTH = 32
# Durations. `every` beyond a day, a `timeout` beyond minutes or a window beyond a week is a typo, not a
# plan: each would make a poll, its backfill or the bucket store absurd (10^20 days overflowed the scheduler).
MAX_EVERY = Duration.parse("1d")
MAX_DELAY = Duration.parse("4m")
MAX_TIMEOUT = Duration.parse("5m")
MAX_WINDOW = Duration.parse("7d")  # a provider that can serve less says so (LivePerson: 1d)
MAX_WINDOWS = 16  # windows per source: each one multiplies the source's series
# Requests a minute (Ozonetel's and Kore.ai's `rate_limit`): 1000 a second is beyond any vendor's limit.
MAX_RATE_LIMIT = 60_000

# Routing labels (`labels:`, `queue_labels:`): a few per source, a bounded text each.
MAX_ROUTING_LABELS = 16  # names per source or per queue
MAX_ROUTING_VALUE = 128  # characters in a value: a team or site name, not a document
MAX_QUEUE_LABELS = 10_000  # queues in `queue_labels`: each is one series of aht_queue_labels_info

_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 60


def shown(value: object) -> str:
    """A value as an error message quotes it: short (a value may be a megabyte), on one line, and with
    anything before an `@` masked (`user:password@host` must not print the password)."""
    if isinstance(value, str) and "@" in value:
        value = "***@" + value.rpartition("@")[2]
    return _SHOWN.repr(value)


def size_text(n: int) -> str:
    """1048576 -> '1MiB', as the config's sizes are written."""
    for unit, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n % unit == 0:
            return f"{n // unit}{suffix}"
    return f"{n}B"


def _to_duration(value: object) -> Duration:
    if isinstance(value, Duration):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{shown(value)} is not a duration string (use e.g. 30s, 5m, 1h, 1d)")
    return Duration.parse(value)


DurationField = Annotated[Duration, BeforeValidator(_to_duration), PlainSerializer(str, return_type=str)]

_SIZE_RE = re.compile(r"^(\d{1,12})\s*(B|KiB|MiB|GiB)?$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
# The most a response may be capped at: far above any reply seen, far below what would exhaust a host.
MAX_RESPONSE_SIZE_LIMIT = 1 << 30


@dataclass(frozen=True, slots=True)
class ByteSize:
    """A size in bytes that remembers how the user wrote it (`64MiB`, or a plain number of bytes)."""

    bytes: int
    text: str

    @classmethod
    def parse(cls, value: object) -> ByteSize:
        if isinstance(value, ByteSize):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        m = _SIZE_RE.match(value.strip()) if isinstance(value, str) else None
        if m is None:
            raise ValueError(f"{shown(value)} is not a size (use e.g. 64MiB, 512KiB or a number of bytes)")
        return cls(int(m.group(1)) * _SIZE_UNITS[m.group(2)], str(value).strip())

    def __str__(self) -> str:
        return self.text


ByteSizeField = Annotated[ByteSize, BeforeValidator(ByteSize.parse), PlainSerializer(str, return_type=str)]


# --- routing labels -----------------------------------------------------------------------------------
# Static labels the user sets per source (`labels:`) and per queue (`queue_labels:`), exported on the info
# series aht_source_labels_info and aht_queue_labels_info for the shipped alerts to join (README, "Labels
# for routing"). A name must not be one the exporter, Prometheus or the alert rules already give a series
# or an alert: the join would overwrite it, or the alert would carry two meanings under one name.
_LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
RESERVED_LABELS = frozenset(
    {
        # the exporter's own, on its data, info and health series
        "source", "provider", "window", "queue", "agent", "media_type", "queue_name", "agent_name",
        "endpoint", "status", "result", "le", "version", "python_version",
        # what Prometheus gives every scraped series, and every alert and rule result
        "job", "instance", "quantile", "alertname", "alertstate", "severity",
    }
)  # fmt: skip


def _label_problems(labels: object, path: str) -> Iterator[tuple[str, str]]:
    """Why `labels` (a mapping of label name to value) cannot be routing labels, as (key path, message)."""
    if not isinstance(labels, dict):
        yield path, f"{shown(labels)} is not a mapping of label names to values"
        return
    if len(labels) > MAX_ROUTING_LABELS:
        yield path, f"{len(labels)} labels are more than {MAX_ROUTING_LABELS}"
        return
    for name, value in labels.items():
        where = f"{path}.{_plain(str(name), 64)}"
        if not isinstance(name, str) or not _LABEL_NAME_RE.match(name) or len(name) > 64:
            yield where, "is not a label name (letters, digits and _, not starting with a digit, at most 64)"
        elif name.startswith("__"):
            yield where, "names starting with __ are reserved for Prometheus"
        elif name in RESERVED_LABELS or name.startswith("exported_"):
            yield where, f"{name} is a label the exporter or Prometheus sets already: choose another name"
        elif not isinstance(value, str):
            yield where, f"{shown(value)} is not a string (quote it)"
        elif not value.strip():
            yield where, "must not be empty (Prometheus reads an empty label as no label)"
        elif len(value) > MAX_ROUTING_VALUE:
            yield where, f"is longer than {MAX_ROUTING_VALUE} characters"
        elif not value.isprintable():
            yield where, f"{shown(value)} holds a control character"


def _yaml_kind(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__


def _sorted_labels(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


class StrictModel(BaseModel):
    # Unknown keys are errors: a typo must not silently disable a setting.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class Defaults(StrictModel):
    every: DurationField = Duration.parse("5m")
    delay: DurationField = Duration.parse("1m")
    windows: list[DurationField] = Field(
        default_factory=lambda: [Duration.parse("30m"), Duration.parse("1h")], max_length=MAX_WINDOWS
    )
    timeout: DurationField = Duration.parse("30s")
    refresh: DurationField | None = None
    stale_after: int = Field(default=3, ge=1, strict=True)  # strict: `true` is not 1
    max_series: int = Field(default=20000, ge=1, strict=True)
    # Bytes read from one response, before and after decompression (issue 12: an endless body or a
    # gzip bomb must fail that poll, not exhaust the host's memory).
    max_response_size: ByteSizeField = ByteSize.parse("64MiB")
    # Routing labels (`team`, `site`...): validated by SourceConfig.problems, which names the key path.
    labels: dict[Any, Any] = Field(default_factory=dict)


class SourceConfig(Defaults):
    """Keys every source takes. Each provider subclasses it with its own keys and `provider` literal."""

    # Seconds of one bucket; a provider with coarser data overrides `bucket_seconds`.
    default_bucket: ClassVar[int] = FIVE_MINUTES
    default_refresh: ClassVar[str] = "1h"
    # URL keys that must be https (or loopback http) unless allow_insecure_http.
    url_keys: ClassVar[tuple[str, ...]] = ("base_url",)
    # Keys fixed by the provider, which a user may not set, `defaults` does not give, and --check-config does
    # not print (Ozonetel's window is the vendor's 2h).
    fixed_keys: ClassVar[frozenset[str]] = frozenset()
    # The longest window (and `refresh`) the provider can serve; a provider that can serve less lowers it.
    max_window: ClassVar[Duration] = MAX_WINDOW

    name: str = Field(pattern=r"^[a-z0-9_-]+$", max_length=64)
    provider: str
    base_url: str | None = None
    allow_insecure_http: bool = False
    # Queue id -> routing labels for that queue, over the source's own (`labels`) where both set a name.
    queue_labels: dict[Any, Any] = Field(default_factory=dict)

    @cached_property  # the config is frozen: computed once, not once per render
    def routing_labels(self) -> Labels:
        """The source's routing labels, sorted by name (valid once `problems` found none)."""
        return _sorted_labels(self.labels)

    @cached_property
    def queue_routing_labels(self) -> dict[str, Labels]:
        """Queue id -> its routing labels: the source's, with the queue's own over them."""
        return {queue: _sorted_labels({**self.labels, **labels}) for queue, labels in self.queue_labels.items()}

    @property
    def bucket_seconds(self) -> int:
        return self.default_bucket

    @property
    def refresh_seconds(self) -> int:
        return (self.refresh or Duration.parse(self.default_refresh)).seconds

    @property
    def max_response_bytes(self) -> int:
        return self.max_response_size.bytes

    @property
    def longest_window(self) -> int:
        return max(w.seconds for w in self.windows)

    def problems(self) -> Iterator[tuple[str, str]]:
        """Cross-field rules, as (key path within the source, message).

        Every duration is bounded here, so that nothing the scheduler, the store or a provider computes
        from it can fail later: `every` up to MAX_EVERY is a cadence scheduler.trigger_for expresses,
        and windows up to the provider's max_window keep a backfill (timebuckets.fetch_span) a few days.
        """
        if self.every.seconds <= 0 or self.every.seconds % FIVE_MINUTES:
            yield "every", f"{self.every} is not a whole multiple of 5m"
        elif self.every.millis > MAX_EVERY.millis:
            yield "every", f"{self.every} is longer than {MAX_EVERY}, the longest cadence"
        if not 0 <= self.delay.millis <= MAX_DELAY.millis:
            yield "delay", f"{self.delay} is outside 0s..{MAX_DELAY}"
        if not 64 * 1024 <= self.max_response_size.bytes <= MAX_RESPONSE_SIZE_LIMIT:
            yield "max_response_size", f"{self.max_response_size} is outside 64KiB..1GiB"
        if self.timeout.millis <= 0:
            yield "timeout", "must be more than 0s"
        elif self.timeout.millis > MAX_TIMEOUT.millis:
            yield "timeout", f"{self.timeout} is longer than {MAX_TIMEOUT}, the longest request timeout"
        elif self.timeout.millis >= self.every.millis:
            yield "timeout", f"{self.timeout} is not shorter than every ({self.every}): a request must fit its poll"
        for key in ("every", "delay", "refresh"):
            value = getattr(self, key)
            if value is not None and value.millis % 1000:
                yield key, f"{value} is not a whole number of seconds"
        if self.refresh is not None and self.refresh.seconds <= 0:
            yield "refresh", "must be more than 0s"
        elif self.refresh is not None and self.refresh.millis > self.max_window.millis:
            yield "refresh", f"{self.refresh} is longer than {self.max_window}, {self._longest()}"
        if not self.windows:
            yield "windows", "needs at least one window"
        bucket = self.bucket_seconds
        seen: set[int] = set()
        for i, w in enumerate(self.windows):
            if w.millis > self.max_window.millis:
                yield f"windows[{i}]", f"{w} is longer than {self.max_window}, {self._longest()}"
            elif w.millis <= 0 or w.millis % (bucket * 1000):
                yield f"windows[{i}]", f"{w} is not a multiple of the source's {Duration.of(bucket)} bucket"
            elif w.seconds in seen:
                yield f"windows[{i}]", f"{w} is listed twice"
            seen.add(w.seconds)
        # Ozonetel's and Kore.ai's requests a minute: their pacer keeps that many slots.
        rate = getattr(self, "rate_limit", None)
        if isinstance(rate, int) and rate > MAX_RATE_LIMIT:
            yield "rate_limit", f"{shown(rate)} is more than {MAX_RATE_LIMIT} requests a minute"
        for key in self.url_keys:
            url = getattr(self, key)
            if url is not None:
                yield from ((key, msg) for msg in _url_problems(url, self.allow_insecure_http))
        for key in secret_keys(type(self)):
            secret = getattr(self, key)
            if secret is not None and not secret.get_secret_value().strip():
                yield key, "must not be empty"
        yield from self._routing_problems()

    def _routing_problems(self) -> Iterator[tuple[str, str]]:
        yield from _label_problems(self.labels, "labels")
        if len(self.queue_labels) > MAX_QUEUE_LABELS:
            yield "queue_labels", f"{len(self.queue_labels)} queues are more than {MAX_QUEUE_LABELS}"
            return
        for queue, labels in self.queue_labels.items():
            where = f"queue_labels.{_plain(str(queue), 64)}"
            if not isinstance(queue, str):
                # `12345:` and `0123:` are numbers to YAML (the second one octal, 83): quoting keeps the id.
                yield where, f"YAML reads this queue id as a {_yaml_kind(queue)} ({shown(queue)}): quote it"
            elif not queue.strip() or len(queue) > MAX_LABEL_VALUE or not queue.isprintable():
                yield where, "is not a queue id (empty, too long or holding a control character)"
            elif not labels:
                yield where, "sets no labels"
            else:
                yield from _label_problems(labels, where)

    def _longest(self) -> str:
        return f"the longest window a {self.provider} source can serve"


def _url_problems(url: str, allow_insecure: bool) -> Iterator[str]:
    if "@" in url:
        # `user:password@host`: a password in a URL would be printed by --check-config and logged with the
        # URL. Any `@` is refused (a password may hold a `/` that hides it from a URL parser), and the URL
        # is not quoted, so that this message does not print it either.
        yield "must not contain `@`: a user name or password in a URL is refused (the URL is not shown: it is secret)"
        return
    try:
        parts = urlsplit(url)
        hostname, _ = parts.hostname, parts.port  # `.port` checks the port: 0..65535
        httpx.URL(url)  # what the provider will build its requests from
    except (ValueError, httpx.InvalidURL) as exc:
        yield f"{shown(url)} is not a valid URL ({exc})"
        return
    if parts.scheme not in ("http", "https") or not hostname:
        yield f"{shown(url)} is not an http(s) URL"
    elif parts.scheme == "http" and not allow_insecure and not is_loopback(hostname):
        yield "plain http:// is refused for a non-loopback host (set allow_insecure_http: true to allow it)"


class Config(StrictModel):
    sources: list[SourceConfig]
    path: str = "<config>"


# Each provider's config model, by the name a source gives in `provider:`. This module knows no provider
# (every provider imports it): the registry hands them in (aht_exporter.registry, which most callers use).
SourceModels = Mapping[str, type[SourceConfig]]


# --- loading ---------------------------------------------------------------------------------------

_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Problem(Exception):
    """What is wrong, and where: a key path (`sources[0].every`), a line (`line 12`) or nothing."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def load_config(path: str | Path, models: SourceModels) -> Config:
    return parse_config(read_config_text(path), models, str(path))


def read_config_text(path: str | Path, what: str = "a config file") -> str:
    """A config file's text: a regular file of at most MAX_CONFIG_FILE_BYTES of UTF-8, or a ConfigError
    `<file>: <what is wrong>`. `what` names the kind of file in the message (the web config uses it too)."""
    name = str(path)
    try:
        data = read_bounded(path, MAX_CONFIG_FILE_BYTES, what)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror or exc}") from None
    except Unfit as exc:
        raise ConfigError(f"{name}: {exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start]
        raise ConfigError(f"{name}: line {line}: not UTF-8 text (byte 0x{bad:02x}): save the file as UTF-8") from None


class Unfit(Exception):
    """A file that is there but must not be read: not a regular file, or larger than its limit."""


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)


def read_bounded(path: str | Path, limit: int, what: str) -> bytes:
    """A regular file's bytes, refusing anything else and anything larger than `limit`. Reads at most
    `limit` + 1 bytes whatever the file claims to hold: a file may grow, and /dev/zero never ends.

    Raises OSError when the file cannot be opened or read, Unfit (its text a sentence starting with
    "is") when it must not be; `what` names the file in that sentence ("a config file").
    """
    try:
        # O_NONBLOCK: opening a named pipe must not wait for a writer. It changes nothing for a file.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except ValueError:  # a NUL in the path
        raise Unfit("is not a usable path (it holds a NUL character)") from None
    chunks: list[bytes] = []
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((k for test, k in _KINDS if test(mode)), "a special file")
            raise Unfit(f"is {kind}, not a regular file")
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    if left <= 0:
        raise Unfit(f"is larger than {size_text(limit)}, the most {what} may hold")
    return b"".join(chunks)


try:  # libyaml's parser: a twentieth of the pure-Python one's time on a large file
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover - a PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(_SafeLoader):
    """YAML's safe loader (no arbitrary objects), refusing a key set twice in one mapping (YAML keeps the
    last one silently) and a list or mapping as a key, and turning a value Python cannot build
    (`2026-02-30`, `!!int x`) into a YAMLError that names its line."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (yaml.YAMLError, RecursionError):
            raise
        except Exception as exc:  # PyYAML's constructors on hostile text: ValueError, AttributeError (`!!timestamp`)...
            problem = f"cannot read this value: {exc}"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):  # `!!set [a]`: PyYAML's own check says what is wrong
            return super().construct_mapping(node, deep=deep)
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:  # `<<: *base`: a merged key may be set again, that is the point
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # unhashable: a list or a mapping
                problem = "a key must be a plain value, not a list or a mapping"
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark) from None
            if repeated:
                problem = f"key {shown(key)} is set twice in the same mapping"
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def parse_config(
    text: str, models: SourceModels, name: str = "<config>", env: Mapping[str, str] | None = None
) -> Config:
    raw = parse_yaml(text, name)
    try:
        return build_config(raw, models, name, os.environ if env is None else env)
    except _Problem as p:
        raise _config_error(name, p) from None
    except RecursionError:  # the limits should make this unreachable: a last resort, not a traceback
        raise _config_error(name, _TOO_DEEP) from None


def parse_yaml(text: str, name: str) -> object:
    """The YAML document in `text`, held to the limits (MAX_CONFIG_VALUES, MAX_CONFIG_TEXT and
    MAX_CONFIG_DEPTH), or a ConfigError `<name>: line N: <what is wrong>` (the web config uses it too)."""
    try:
        return load_yaml(text)
    except (yaml.YAMLError, _Problem) as exc:
        raise _config_error(name, exc) from None
    except RecursionError:
        raise _config_error(name, _TOO_DEEP) from None


_TOO_DEEP = _Problem("", f"nested too deeply (the limit is {MAX_CONFIG_DEPTH} levels)")


def _config_error(name: str, exc: _Problem | yaml.YAMLError) -> ConfigError:
    """One line: `<file>: <key path or line>: <what is wrong>`."""
    if isinstance(exc, _Problem):
        message = f"{exc.path}: {exc.message}" if exc.path else exc.message
    else:
        message = _yaml_message(exc)
    return ConfigError(f"{name}: " + " ".join(message.splitlines()))


def _yaml_message(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    kind = "" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax error: "
    return f"{where}{kind}{problem}"


def load_yaml(text: str) -> object:
    """The one YAML document in `text`, refused (a _Problem naming the line) when it would grow beyond
    the limits, before anything is built from it."""
    try:
        text.encode("utf-8")  # libyaml reads UTF-8: a lone surrogate (from a caller, not a file) is no text
    except UnicodeEncodeError as exc:
        raise _Problem(f"line {text.count(chr(10), 0, exc.start) + 1}", "not Unicode text (a lone surrogate)") from None
    _check_shape(text)
    try:
        return yaml.load(text, Loader=_Loader)
    except (yaml.YAMLError, RecursionError):
        raise
    except Exception as exc:  # PyYAML on hostile text, where _Loader has not caught it: one line, not a traceback
        raise _Problem("", f"cannot read the YAML ({type(exc).__name__}: {exc})") from None


@dataclass(slots=True)
class _Open:
    """A mapping or list being read: what it holds so far, its aliases expanded."""

    anchor: str | None
    values: int = 1  # itself
    text: int = 0
    depth: int = 0  # of its deepest child


@dataclass(frozen=True, slots=True)
class _Size:
    values: int
    text: int
    depth: int  # mappings and lists nested in it, itself included


def _check_shape(text: str) -> None:
    """Refuse a document beyond MAX_CONFIG_VALUES, MAX_CONFIG_TEXT or MAX_CONFIG_DEPTH.

    It reads the parser's events, which are the composed node graph in document order, before any node
    is composed or built: an alias counts as the node it names (memoised per anchor), so a billion laughs
    is refused a few hundred bytes in, and a merge key (`<<: *base`) counts what it merges. Nesting is
    counted through aliases too; an alias inside the node it names (a recursive structure) is refused.
    """
    anchors: dict[str, _Size] = {}
    stack = [_Open(None)]  # the document itself at the bottom
    values = chars = 0
    for event in yaml.parse(text, Loader=_Loader):
        line = f"line {event.start_mark.line + 1}" if event.start_mark is not None else ""
        if isinstance(event, yaml.events.CollectionStartEvent):
            stack.append(_Open(event.anchor))
            if event.anchor is not None:
                anchors.pop(event.anchor, None)  # until it ends, an alias to it is recursive
            values += 1
            if len(stack) - 1 > MAX_CONFIG_DEPTH:
                raise _Problem(line, f"mappings and lists are nested more than {MAX_CONFIG_DEPTH} deep")
        elif isinstance(event, yaml.events.CollectionEndEvent):
            done = stack.pop()
            _add(stack[-1], done.anchor, _Size(done.values, done.text, done.depth + 1), anchors)
        elif isinstance(event, yaml.events.ScalarEvent):
            values += 1
            chars += len(event.value)
            _add(stack[-1], event.anchor, _Size(1, len(event.value), 0), anchors)
        elif isinstance(event, yaml.events.AliasEvent):
            size = anchors.get(event.anchor or "")
            if size is None:
                if any(o.anchor == event.anchor for o in stack):
                    raise _Problem(line, f"alias *{event.anchor} is inside the node it names (a recursive structure)")
                continue  # an undefined alias: the composer says so
            values += size.values
            chars += size.text
            if len(stack) - 1 + size.depth > MAX_CONFIG_DEPTH:
                raise _Problem(line, f"mappings and lists are nested more than {MAX_CONFIG_DEPTH} deep")
            _add(stack[-1], None, size, anchors)
        if values > MAX_CONFIG_VALUES:
            raise _Problem(line, f"more than {MAX_CONFIG_VALUES} values once its aliases are expanded")
        if chars > MAX_CONFIG_TEXT:
            raise _Problem(line, f"more than {size_text(MAX_CONFIG_TEXT)} of text once its aliases are expanded")


def _add(parent: _Open, anchor: str | None, size: _Size, anchors: dict[str, _Size]) -> None:
    parent.values += size.values
    parent.text += size.text
    parent.depth = max(parent.depth, size.depth)
    if anchor is not None:
        anchors[anchor] = size


def _plain(text: str, limit: int = 200) -> str:
    """`text` as is in a message when it is short and printable (a key, a path), else quoted and cut."""
    return text if len(text) <= limit and text.isprintable() else shown(text)


def build_config(raw: object, models: SourceModels, name: str, env: Mapping[str, str]) -> Config:
    """`raw` (the parsed YAML, or a mapping built in code) validated into a Config, each source against its
    provider's model in `models`; the first problem is raised as a _Problem (parse_config words it)."""
    if not isinstance(raw, dict):
        raise _Problem("", "the file must be a mapping with a `sources` list")
    for key in raw:
        if key not in ("defaults", "sources"):
            raise _Problem(_plain(str(key)), "unknown key (expected `defaults` and `sources`)")
    unset: list[tuple[str, str]] = []
    data: dict[str, Any] = _substitute(raw, "", env, _Budget(MAX_CONFIG_TEXT), unset)
    if len(unset) == 1:
        raise _Problem(unset[0][1], f"environment variable {unset[0][0]} is not set")
    if unset:  # every one at once: a first run should not reveal them one error at a time
        raise _Problem("", "environment variables not set: " + ", ".join(f"{var} ({path})" for var, path in unset))
    defaults_raw = data.get("defaults")
    if defaults_raw is None:
        defaults_raw = {}
    if not isinstance(defaults_raw, dict):
        raise _Problem("defaults", "must be a mapping")
    _validate(Defaults, defaults_raw, "defaults")
    sources_raw = data.get("sources")
    if not isinstance(sources_raw, list) or not sources_raw:
        raise _Problem("sources", "must be a non-empty list of sources")

    sources: list[SourceConfig] = []
    names: dict[str, int] = {}
    for i, item in enumerate(sources_raw):
        where = f"sources[{i}]"
        if not isinstance(item, dict):
            raise _Problem(where, "must be a mapping")
        provider = item.get("provider")
        if not isinstance(provider, str) or provider not in models:
            known = ", ".join(sorted(models))
            raise _Problem(f"{where}.provider", f"{shown(provider)} is not a known provider ({known})")
        model = models[provider]
        # Every `defaults` key but those the provider fixes (a provider with a fixed window takes no `windows`).
        inherited = {k: v for k, v in defaults_raw.items() if k not in model.fixed_keys}
        merged = {**inherited, **_read_secret_files(item, model, where)}
        source = _validate(model, merged, where)
        for key, message in source.problems():
            top = re.split(r"[.\[]", key, maxsplit=1)[0]
            if top in inherited and top not in item:  # the user wrote it under `defaults`: say so
                raise _Problem(f"defaults.{key}", f"{message} (in {where}, which inherits it)")
            raise _Problem(f"{where}.{key}", message)
        if source.name in names:
            raise _Problem(f"{where}.name", f"{source.name!r} is already used by sources[{names[source.name]}]")
        names[source.name] = i
        sources.append(source)
    return Config(sources=sources, path=name)


def _validate(model: type[M], data: dict[str, Any], where: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = where + "".join(f"[{p}]" if isinstance(p, int) else f".{_plain(str(p))}" for p in err["loc"])
        raise _Problem(path, _message(err)) from None


def _message(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "is required"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


class _Budget:
    """Characters the config's values may still take once their ${VAR}s are substituted."""

    def __init__(self, chars: int) -> None:
        self.left = chars

    def spend(self, chars: int, path: str) -> None:
        self.left -= chars
        if self.left < 0:
            limit = size_text(MAX_CONFIG_TEXT)
            raise _Problem(path, f"the config's values hold more than {limit} of text once ${{VAR}}s are substituted")


def _substitute(value: Any, path: str, env: Mapping[str, str], budget: _Budget, unset: list[tuple[str, str]]) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string; `$$` is a literal `$`. Each unset ${VAR} is
    appended to `unset` as (VAR, key path); it becomes empty (the config is refused anyway)."""
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            var, default = m.group(1), m.group(2)
            if var in env:
                budget.spend(len(env[var]), path)  # before the text is built: `${BIG}` a million times
                return env[var]
            if default is not None:
                return default
            unset.append((var, path))
            return ""

        budget.spend(len(value), path)
        return _VAR_RE.sub(repl, value)
    if isinstance(value, dict):
        return {k: _substitute(v, _join(path, _plain(str(k))), env, budget, unset) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{path}[{i}]", env, budget, unset) for i, v in enumerate(value)]
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def secret_keys(model: type[BaseModel]) -> list[str]:
    return [n for n, f in model.model_fields.items() if "SecretStr" in str(f.annotation)]


def _read_secret_files(item: dict[str, Any], model: type[BaseModel], where: str) -> dict[str, Any]:
    """`x_file: /path` for every secret key `x` (Kubernetes and Docker secrets): read once, at start.

    A regular file of at most MAX_SECRET_FILE_BYTES of UTF-8 text; not a byte of it is ever quoted."""
    out = dict(item)
    for key in secret_keys(model):
        file_key = f"{key}_file"
        if file_key not in out:
            continue
        if key in out:
            raise _Problem(f"{where}.{file_key}", f"set either {key} or {file_key}, not both")
        path = out.pop(file_key)
        if not isinstance(path, str) or not path:
            raise _Problem(f"{where}.{file_key}", "must be a file path")
        try:
            data = read_bounded(path, MAX_SECRET_FILE_BYTES, "a secret file")
            out[key] = data.decode("utf-8").rstrip("\r\n")
        except OSError as exc:
            raise _Problem(f"{where}.{file_key}", f"cannot read {_plain(path)}: {exc.strerror or exc}") from None
        except Unfit as exc:
            raise _Problem(f"{where}.{file_key}", f"{_plain(path)} {exc}") from None
        except UnicodeDecodeError:
            raise _Problem(f"{where}.{file_key}", f"{_plain(path)} is not UTF-8 text") from None
    return out


def redacted(config: Config) -> str:
    """The resolved config as YAML, every secret replaced by asterisks (for --check-config)."""
    data = {
        "sources": [s.model_dump(mode="json", exclude_none=True, exclude=set(s.fixed_keys)) for s in config.sources]
    }
    for source, model in zip(data["sources"], config.sources, strict=True):
        for key in ("labels", "queue_labels"):
            if not source.get(key):  # none set: as quiet as before the keys existed
                source.pop(key, None)
        for key, seconds in (("bucket", model.bucket_seconds), ("refresh", model.refresh_seconds)):
            if key not in model.fixed_keys:
                source[key] = str(Duration.of(seconds))
    return yaml.safe_dump(data, sort_keys=False)
