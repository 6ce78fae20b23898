"""Every log line leaves the process redacted whole, traceback included; levels are Prometheus' names. A line
is one line whatever a vendor's text holds, and the event loop cannot flood the log."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator

import pytest

from aht_exporter.cli import _install_redaction
from aht_exporter.logs import NOISY_KINDS, NOISY_LOGGERS, RateLimit, setup_logging
from aht_exporter.registry import build_config

SECRET = 'sec"ret-7Kp\\x'  # a quote and a backslash: escaped by logfmt and JSON, so masked before encoding


@pytest.fixture
def root() -> Iterator[None]:
    """setup_logging replaces the root handlers and filters the noisy loggers; put it all back afterwards."""
    logger = logging.getLogger()
    handlers, level = logger.handlers[:], logger.level
    filters = {name: logging.getLogger(name).filters[:] for name in ("asyncio", "aiohttp.server")}
    yield
    logging.captureWarnings(False)
    logger.handlers[:], logger.level = handlers, level
    for name, kept in filters.items():
        logging.getLogger(name).filters[:] = kept


def configure(fmt: str, level: str = "info") -> None:
    setup_logging(level, fmt)
    source = {"name": "g", "provider": "genesys", "region": "mypurecloud.ie", "client_id": "a"}
    _install_redaction(build_config({"sources": [source | {"client_secret": SECRET}]}, "t", {}))


class Echo:
    def __str__(self) -> str:
        return f"https://vendor.example/?token={SECRET}"


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_a_crash_traceback_is_redacted(root: None, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    configure(fmt)
    try:
        raise RuntimeError(f"vendor echoed {SECRET} back")
    except RuntimeError:
        logging.getLogger("aht_exporter.scheduler").exception("poll crashed", extra={"source": "g"})
    err = capsys.readouterr().err
    assert err.count("\n") == 1  # still one line
    assert "Traceback" in err and "RuntimeError: vendor echoed <redacted> back" in err.replace("\\n", "\n")
    assert "sec" + '"ret' not in err and "ret-7Kp" not in err


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_every_field_is_redacted_not_only_text_ones(root: None, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    configure(fmt)
    logging.getLogger("aht_exporter").warning("odd answer from %s", Echo(), extra={"url": Echo(), "n": 3})
    err = capsys.readouterr().err
    assert "ret-7Kp" not in err
    assert err.count("token=<redacted>") == 2
    if fmt == "json":
        assert json.loads(err)["n"] == 3  # numbers stay numbers


@pytest.mark.parametrize(("fmt", "expected"), [("logfmt", " level=warn "), ("json", '"level": "warn"')])
def test_warn_is_printed_as_warn(root: None, fmt: str, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    configure(fmt, level="warn")
    logging.getLogger("aht_exporter").info("not shown")
    logging.getLogger("aht_exporter").warning("shown")
    err = capsys.readouterr().err
    assert expected in err and "warning" not in err
    assert "not shown" not in err


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_a_python_warning_is_one_log_line_in_the_log_format(
    root: None, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from pydantic import SecretStr

    from aht_exporter.providers.koreai import mint_jwt

    configure(fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        mint_jwt("cs-app", SecretStr("short"), 1_700_000_000.0)  # PyJWT: InsecureKeyLengthWarning
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    if fmt == "json":
        line = json.loads(err)
        assert (line["level"], line["logger"]) == ("warn", "py.warnings")
        assert "InsecureKeyLengthWarning" in line["msg"]
    else:
        assert err.startswith("ts=") and " level=warn logger=py.warnings msg=" in err
        assert "InsecureKeyLengthWarning" in err


# What a vendor's JSON text can decode to: a lone surrogate (from `\ud800`), a terminal escape sequence, a
# carriage return that would overwrite the line on a terminal, a bell, a Unicode line separator.
HOSTILE = "bad\ud800text \x1b[31mred\x1b[0m\rover\x07bell\u2028next"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def reject_constant(name: str) -> object:
    raise AssertionError(f"{name} is not JSON")


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_a_vendor_text_with_a_lone_surrogate_and_control_characters_stays_one_clean_line(
    root: None, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(fmt)
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        logging.getLogger("aht_exporter.scheduler").exception(
            "poll failed: %s", HOSTILE, extra={"source": "g", "error": HOSTILE, "ratio": float("nan")}
        )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n")
    err.encode("utf-8")  # UTF-8 can hold all of it: no lone surrogate
    assert not any(c in err for c in "\x1b\r\x07\u2028")
    assert "\\ud800" not in err  # not even as JSON's escape
    if fmt == "logfmt":
        assert 'error="bad\ufffdtext \\u001b[31mred\\u001b[0m\\rover\\u0007bell\\u2028next"' in err
        assert "ratio=nan" in err
    else:
        line = json.loads(err, parse_constant=reject_constant)
        cleaned = HOSTILE.replace("\ud800", "\ufffd")
        assert line["error"] == cleaned
        assert line["msg"] == f"poll failed: {cleaned}"
        assert line["exc"].endswith(f"ValueError: {cleaned}")
        assert line["ratio"] == "nan"


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_a_record_that_cannot_be_formatted_is_still_one_line(
    root: None, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(fmt)
    logging.getLogger("aht_exporter").warning("%d series", "many", extra={"odd": Unprintable()})
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "%d series (arguments: ('many',))" in err
    assert "<unprintable Unprintable>" in err


def test_the_event_loop_and_aiohttp_cannot_flood_the_log(root: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure("logfmt")
    for fd in range(1000):  # what asyncio logs for each accept() that fails with EMFILE
        logging.getLogger("asyncio").error(
            f"socket.accept() out of system resource\nsocket: <asyncio.TransportSocket fd={fd}>",
            exc_info=OSError(24, "Too many open files"),
        )
    for port in range(1000):  # what aiohttp logs for each malformed request
        logging.getLogger("aiohttp.server").error("Error handling request from %s", f"127.0.0.1:{port}")
    logging.getLogger("aht_exporter").error("a line of our own")
    err = capsys.readouterr().err
    assert err.count("out of system resource") == 1
    assert err.count("Error handling request") == 1
    assert "a line of our own" in err
    assert len(err.splitlines()) == 3


def test_after_the_interval_the_next_line_says_how_many_were_left_out() -> None:
    now = [0.0]
    limit = RateLimit(interval=60.0, clock=lambda: now[0])

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None, None)

    assert limit.filter(record("socket.accept() out of system resource\nsocket: fd=7"))
    shown = [limit.filter(record(f"socket.accept() out of system resource\nsocket: fd={fd}")) for fd in range(500)]
    assert not any(shown)
    assert limit.filter(record("Fatal error on transport"))  # another kind has its own allowance
    now[0] = 59.9
    assert not limit.filter(record("socket.accept() out of system resource\nsocket: fd=8"))
    now[0] = 60.0
    later = record("socket.accept() out of system resource\nsocket: fd=9")
    assert limit.filter(later)
    assert later.__dict__["suppressed"] == 501


def test_kinds_beyond_the_tracked_number_share_one_allowance() -> None:
    limit = RateLimit(clock=lambda: 0.0)
    shown = [limit.filter(logging.LogRecord("asyncio", logging.ERROR, "", 1, "x" * n, None, None)) for n in range(999)]
    assert sum(shown) == NOISY_KINDS + 1


def test_setup_logging_installs_one_rate_limit_per_noisy_logger(root: None) -> None:
    setup_logging("info", "logfmt")
    setup_logging("info", "json")
    for name in NOISY_LOGGERS:
        assert sum(isinstance(f, RateLimit) for f in logging.getLogger(name).filters) == 1
