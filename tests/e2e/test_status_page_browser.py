"""The status page `/` in a real headless Chromium: it renders, says what is up and down, escapes errors.

Chromium comes from Debian (`apt-get install chromium`); .ci/run installs it and sets
AHT_REQUIRE_CHROMIUM=1, elsewhere the test skips with a reason when it is missing.
A screenshot is kept in test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("AHT_REQUIRE_CHROMIUM") == "1":
        pytest.fail("chromium is not installed, and AHT_REQUIRE_CHROMIUM=1 says this test must run")
    pytest.skip("chromium is not installed (Debian package `chromium`)")


async def run_chromium(binary: str, profile: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        binary,
        *FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode == 0
    return out.decode()


@pytest.mark.asyncio
async def test_status_page_renders_in_chromium(stack: Stack, tmp_path: Path) -> None:
    binary = chromium()
    assert await stack.exporter.poll_all()
    agents = stack.exporter.runners[1]
    for _ in range(3):  # three failures: stale, data withdrawn
        agents.health.record_failure(stack.clock.now(), 0.2, 'POST /x: HTTP 503: <b>"down"</b>')
    url = f"{stack.client.base_url}/"

    dom = await run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", url)
    assert "<h1>aht-exporter</h1>" in dom
    assert '<td class="up">up</td>' in dom
    assert "down, data withdrawn after 3 failed polls" in dom
    assert f"0 ({agents.health.series} withdrawn)" in dom
    assert '&lt;b&gt;"down"&lt;/b&gt;' in dom and "<b>" not in dom  # the error is text, not markup
    assert "demo-secret" not in dom
    assert '<a href="/metrics">Metrics</a>' in dom

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    shot.unlink(missing_ok=True)
    await run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1400,400", url)
    assert shot.stat().st_size > 5000  # a real picture, not an empty page
