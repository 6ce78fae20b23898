"""The README's quoted log lines are what the exporter really writes (issue 15).

Every `level=... msg=...`-style example and every `error="..."` example in README.md's failure table and its
Logs section is matched against log lines the real code paths write: the demo's Genesys simulator with each
documented fault, the Exporter, a FakeClock, and the logfmt formatter. In a README quote `...` stands for any
text; nothing else is loose.
"""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from aht_exporter.clock import FakeClock
from aht_exporter.logs import LogfmtFormatter
from aht_exporter.model import ConfigError
from aht_exporter.registry import build_config, parse_config
from aht_exporter.scheduler import Exporter, poll_deadline
from aht_exporter.simulator.demo import Demo
from aht_exporter.simulator.genesys import DEMO_CLIENT_ID
from tests.helpers import T0, RecordingSleep

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
SHORT_DEADLINE = 2.0  # the tests' poll deadline; the README's 290s is 5m less 10s (checked below)


def failure_table() -> str:
    start = README.index("## When things go wrong")
    return README[start : README.index("\n## ", start + 1)]


def logs_section() -> str:
    start = README.index("## Logs")
    return README[start : README.index("\n## ", start + 1)]


def quoted_log_lines() -> list[str]:
    """Every backticked example that is a log line, or a part of one, in the two sections."""
    quotes = re.findall(r"`([^`]*)`", failure_table() + logs_section())
    return [q for q in quotes if re.search(r'\b(level|msg|error)="?', q) and q != 'error="..."']


def pattern(quote: str) -> re.Pattern[str]:
    quote = quote.replace("within 290s", f"within {SHORT_DEADLINE:.0f}s")
    return re.compile(".*?".join(re.escape(part) for part in quote.split("...")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def log_lines_of(spec: str | None, caplog: pytest.LogCaptureFixture, **overrides: Any) -> list[str]:
    """Two polls of the demo's `demo-genesys` source (the fault injected between them; `stale` faults stay
    for two more), each log line as logfmt writes it."""
    clock = FakeClock(T0)
    demo = Demo(clock)
    await demo.start()
    (source,) = [s | overrides.pop("source", {}) for s in demo.sources if s["name"] == "demo-genesys"]
    raw = {"defaults": {"timeout": "1s", "stale_after": 3, **overrides}, "sources": [source]}
    exporter = Exporter(build_config(raw, "<readme>", {}), clock=clock, sleep=RecordingSleep())
    formatter = LogfmtFormatter()
    caplog.clear()
    try:
        with caplog.at_level(logging.INFO):
            await exporter.poll_all()
            if spec:
                demo.inject(spec)
            for _ in range(3 if spec and spec.endswith("503") else 1):
                await exporter.poll_all()
    finally:
        await exporter.aclose()
        await demo.stop()
    return [formatter.format(r) for r in caplog.records]


@pytest.mark.asyncio
async def test_every_quoted_log_line_in_the_readme_is_real_output(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines: list[str] = []
    for spec in ("genesys:503", "genesys:429", "genesys:401", "genesys:missing-field", "genesys:negative-number"):
        lines += await log_lines_of(spec, caplog)
    lines += await log_lines_of("genesys:gzip-bomb", caplog, max_response_size="64MiB")
    lines += await log_lines_of("genesys:slow", caplog, timeout="300ms")  # each request past its timeout
    lines += await log_lines_of(None, caplog, max_series=2)
    # A refused token request (a wrong secret), and a login host nobody answers on.
    lines += await log_lines_of(None, caplog, source={"client_secret": "wrong-secret-value"})
    lines += await log_lines_of(None, caplog, source={"login_url": f"http://127.0.0.1:{free_port()}"})
    # A poll past its deadline: answers that come within `timeout`, too late for the poll.
    monkeypatch.setattr("aht_exporter.scheduler.poll_deadline", lambda config: SHORT_DEADLINE)
    lines += await log_lines_of("genesys:slow", caplog, timeout="10s")

    quotes = quoted_log_lines()
    assert len(quotes) >= 10, quotes
    missing = [q for q in quotes if not any(pattern(q).search(line) for line in lines)]
    assert not missing, (
        "README quotes no real line matches:\n"
        + "\n".join(missing)
        + "\n--- real:\n"
        + "\n".join(sorted({re.sub(r"^ts=\S+ ", "", line) for line in lines}))
    )


def test_the_readme_deadline_is_the_cadence_less_10_seconds() -> None:
    config = build_config(
        {
            "sources": [
                {
                    "name": "g",
                    "provider": "genesys",
                    "region": "mypurecloud.com",
                    "client_id": DEMO_CLIENT_ID,
                    "client_secret": "x",
                    "every": "5m",
                }
            ]
        },
        "t",
        {},
    ).sources[0]
    assert f"within {poll_deadline(config):.0f}s" == "within 290s"


def test_the_readme_config_error_example_is_real() -> None:
    (example,) = re.findall(r"`(config\.yaml: sources\[0\]\.windows[^`]*)`", README)
    text = "sources:\n  - {name: g, provider: genesys, region: mypurecloud.com, client_id: a, client_secret: b,\n"
    text += "     windows: [30m, 7m]}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "config.yaml", {})
    assert str(info.value) == example
