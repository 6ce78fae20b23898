"""One line per event, logfmt or JSON, with every `extra=` field (`source=` above all).

Every line leaves redacted whole: message, fields, traceback (see `install_redactor`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Redact = Callable[[str], str]

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
# Prometheus' level names (--log.level takes `warn`), not Python's `warning`.
_LEVELS = {logging.WARNING: "warn"}


def _unredacted(text: str) -> str:
    return text


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": _LEVELS.get(record.levelno, record.levelname.lower()),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    out.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
    if record.exc_info:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    if record.stack_info:
        out["stack"] = record.stack_info
    return out


def _clean(value: object, redact: Redact) -> object:
    """Redact before encoding: logfmt and JSON escape quotes and backslashes, which would hide a secret
    containing one from a pass over the encoded line. Anything not a number goes through its text."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_clean(v, redact) for v in value]
    if isinstance(value, dict):
        return {str(k): _clean(v, redact) for k, v in value.items()}
    return redact(str(value))


class _LineFormatter(logging.Formatter):
    redact: Redact = staticmethod(_unredacted)

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: _clean(v, self.redact) for k, v in _fields(record).items()}
        # And the encoded line as a whole, so that nothing added to it (a key, say) escapes.
        return self.redact(self.encode(fields))

    def encode(self, fields: dict[str, Any]) -> str:
        raise NotImplementedError


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' ="\\\n\t'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class LogfmtFormatter(_LineFormatter):
    def encode(self, fields: dict[str, Any]) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items())


class JsonFormatter(_LineFormatter):
    def encode(self, fields: dict[str, Any]) -> str:
        return json.dumps(fields, default=str)


def setup_logging(level: str, fmt: str, filters: list[logging.Filter] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    for f in filters or []:
        handler.addFilter(f)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter stays at WARNING: httpx would log full URLs at INFO.
    for name in ("httpx", "httpcore", "apscheduler", "aiohttp.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


def install_redactor(redact: Redact) -> None:
    """Once the config (and so the secrets) is known: every line the root handlers format is redacted."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, _LineFormatter):
            handler.formatter.redact = redact
