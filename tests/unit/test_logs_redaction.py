"""Every log line leaves the process redacted whole, traceback included; levels are Prometheus' names."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from aht_exporter.cli import _install_redaction
from aht_exporter.config import build_config
from aht_exporter.logs import setup_logging

SECRET = 'sec"ret-7Kp\\x'  # a quote and a backslash: escaped by logfmt and JSON, so masked before encoding


@pytest.fixture
def root() -> Iterator[None]:
    """setup_logging replaces the root handlers; put pytest's back afterwards."""
    logger = logging.getLogger()
    handlers, level = logger.handlers[:], logger.level
    yield
    logger.handlers[:], logger.level = handlers, level


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
