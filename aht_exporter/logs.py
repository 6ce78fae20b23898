"""One line per event, logfmt or JSON, with every `extra=` field (`source=` above all).

Every line leaves redacted whole: message, fields, traceback (see `install_redactor`). A line never fails
and never breaks in two: a vendor's text may hold a lone UTF-16 surrogate (written as U+FFFD) or control
characters (escaped), and a record whose message cannot be formatted is still written. The event loop's
and aiohttp's own complaints, which a hostile client can raise by the thousand, are rate limited
(`RateLimit`).
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aht_exporter.model import well_formed

Redact = Callable[[str], str]

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
# Prometheus' level names (--log.level takes `warn`), not Python's `warning`.
_LEVELS = {logging.WARNING: "warn"}


def _unredacted(text: str) -> str:
    return text


def _text(value: object) -> str:
    try:
        return str(value)
    except Exception:  # an object whose __str__ fails still leaves a trace on the line
        return f"<unprintable {type(value).__name__}>"


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # arguments that do not fit the format: the line goes out with both, unformatted
        return f"{_text(record.msg)} (arguments: {_text(record.args)})"


def _warning_text(record: logging.LogRecord) -> str:
    """A Python warning (logging.captureWarnings) as `file:line: Category: message`, without the line of
    source code `warnings.formatwarning` puts under it."""
    return _message(record).strip().partition("\n")[0]


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": _timestamp(record.created),
        "level": _LEVELS.get(record.levelno, record.levelname.lower()),
        "logger": record.name,
        "msg": _warning_text(record) if record.name == "py.warnings" else _message(record),
    }
    out.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
    if record.exc_info:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    if record.stack_info:
        out["stack"] = record.stack_info
    return out


def _clean(value: object, redact: Redact) -> object:
    """Redact before encoding: logfmt and JSON escape quotes and backslashes, which would hide a secret
    containing one from a pass over the encoded line. Anything not a number goes through its text, well
    formed (`well_formed`); a float JSON cannot hold (NaN, infinities) too."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, list | tuple):
        return [_clean(v, redact) for v in value]
    if isinstance(value, dict):
        return {well_formed(redact(_text(k))): _clean(v, redact) for k, v in value.items()}
    return well_formed(redact(_text(value)))


class _LineFormatter(logging.Formatter):
    redact: Redact = staticmethod(_unredacted)

    def format(self, record: logging.LogRecord) -> str:
        try:
            fields = {k: _clean(v, self.redact) for k, v in _fields(record).items()}
            # And the encoded line as a whole, so that nothing added to it (a key, say) escapes.
            return self.redact(self.encode(fields))
        except Exception as exc:  # the last resort: a line that says a line was lost, never a traceback
            return self.encode(
                {
                    "ts": _timestamp(record.created),
                    "level": "error",
                    "logger": __name__,
                    "msg": "a log line could not be written",
                    "of_logger": well_formed(record.name),
                    "error": type(exc).__name__,
                }
            )

    def encode(self, fields: dict[str, Any]) -> str:
        raise NotImplementedError


# logfmt as go-logfmt writes it: a value with a space, `=`, a quote, a backslash or a control character is
# quoted; inside the quotes a backslash, quote, newline, carriage return and tab are escaped as in Go, any
# other control character (C0, DEL, C1) and the Unicode line and paragraph separators as `\uXXXX`, so
# that a vendor's text can neither split a line nor send a terminal escape sequence.
_LOGFMT_QUOTED = re.compile(r'[\s="\\\x00-\x1f\x7f-\x9f\u2028\u2029]')
_LOGFMT_ESCAPED = re.compile(r'["\\\x00-\x1f\x7f-\x9f\u2028\u2029]')
_LOGFMT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _logfmt_escape(match: re.Match[str]) -> str:
    char = match.group()
    return _LOGFMT_ESCAPES.get(char) or f"\\u{ord(char):04x}"


def _logfmt_value(value: object) -> str:
    text = well_formed(_text(value))
    if text and not _LOGFMT_QUOTED.search(text):
        return text
    return '"' + _LOGFMT_ESCAPED.sub(_logfmt_escape, text) + '"'


class LogfmtFormatter(_LineFormatter):
    def encode(self, fields: dict[str, Any]) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items())


class JsonFormatter(_LineFormatter):
    def encode(self, fields: dict[str, Any]) -> str:
        return json.dumps(fields, default=str)


NOISY_LOGGERS = ("asyncio", "aiohttp.server")
"""Loggers a client can make write a line per connection: the event loop's (`socket.accept() out of system
resource`, failed TLS handshakes...) and aiohttp's (`Error handling request` for each malformed request)."""
NOISY_INTERVAL = 60.0
"""Seconds: at most one line of each kind per noisy logger in that time."""
NOISY_KINDS = 64
"""Kinds of line tracked at once; past that, any new kind shares one allowance."""
_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+")


class RateLimit(logging.Filter):
    """At most one line of each kind every `interval` seconds. A kind is the logger, the level and the first
    line of the message's format with every number masked (a descriptor, an address or a port does not make
    a new kind). The first line shown after a pause carries `suppressed=`, the count of lines left out."""

    def __init__(
        self, interval: float = NOISY_INTERVAL, clock: Callable[[], float] = time.monotonic, kinds: int = NOISY_KINDS
    ) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._max_kinds = kinds
        self._shown: dict[str, tuple[float, int]] = {}  # kind -> (when a line was last shown, lines left out since)

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        kind = self._kind(record, now)
        shown_at, left_out = self._shown.get(kind, (None, 0))
        if shown_at is not None and now - shown_at < self._interval:
            self._shown[kind] = (shown_at, left_out + 1)
            return False
        if left_out:
            record.suppressed = left_out
        self._shown[kind] = (now, 0)
        return True

    def _kind(self, record: logging.LogRecord, now: float) -> str:
        first_line = _text(record.msg).partition("\n")[0][:200]
        kind = f"{record.name} {record.levelno} {_NUMBERS.sub('#', first_line)}"
        if kind in self._shown or len(self._shown) < self._max_kinds:
            return kind
        # Forget the kinds whose time is up (they owe no count); if that is not enough, share one allowance.
        self._shown = {k: v for k, v in self._shown.items() if now - v[0] < self._interval or v[1]}
        return kind if len(self._shown) < self._max_kinds else f"{record.name} other"


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Python warnings (PyJWT's InsecureKeyLengthWarning for a short Kore.ai secret, say) as log lines of the
    # `py.warnings` logger, in the format of every other line, instead of raw text on stderr.
    logging.captureWarnings(True)
    # Library chatter stays at WARNING: httpx would log full URLs at INFO.
    for name in ("httpx", "httpcore", "apscheduler", "aiohttp.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in NOISY_LOGGERS:
        noisy = logging.getLogger(name)
        for old in [f for f in noisy.filters if isinstance(f, RateLimit)]:
            noisy.removeFilter(old)
        noisy.addFilter(RateLimit())


def install_redactor(redact: Redact) -> None:
    """Once the config (and so the secrets) is known: every line the root handlers format is redacted."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, _LineFormatter):
            handler.formatter.redact = redact
