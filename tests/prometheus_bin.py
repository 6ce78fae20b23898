"""The real Prometheus binaries for the tests: found (skip with a reason when absent, fail when CI requires
them), and a Prometheus server run for the length of a `with` or `async with` block."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx
import pytest

WAIT = 60.0  # seconds: the most that Prometheus may take to listen, open its storage and be ready
STOP_WAIT = 30.0  # seconds: SIGTERM, then SIGKILL after this long
LISTENING = re.compile(r'msg="Listening on" address=(127\.0\.0\.1:\d+)')


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is not None:
        return path
    reason = f"`{binary}` is not installed (Debian package `prometheus`)"
    if os.environ.get("AHT_REQUIRE_PROMETHEUS") == "1":
        pytest.fail(f"{reason}, and AHT_REQUIRE_PROMETHEUS=1 says these tests must run")
    pytest.skip(reason)


class PrometheusServer:
    """`prometheus` with `config` (the text of its prometheus.yml) written into `workdir`, its storage in
    `storage` (default: `workdir`/data), listening on an ephemeral loopback port that the kernel picks.

    Entering starts it and waits, bounded by WAIT, until /-/ready answers 200: it listens, has opened its
    storage (backfilled blocks too) and loaded its rules. `url` is then its HTTP API. Leaving stops it and
    prints what it logged at warn level or above to stderr, where pytest shows it for a failed test. Used
    as `with` from synchronous tests and fixtures, as `async with` where the event loop must keep running
    meanwhile (an exporter in the same loop that it scrapes).
    """

    def __init__(self, workdir: Path, config: str, *, storage: Path | None = None, args: Sequence[str] = ()) -> None:
        self.binary = require("prometheus")
        self.workdir = workdir
        self.config = config
        self.storage = storage or workdir / "data"
        self.args = list(args)
        self.log = workdir / "prometheus.log"
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> None:
        config = self.workdir / "prometheus.yml"
        config.write_text(self.config)
        with self.log.open("wb") as log:  # the child keeps its own descriptor
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.storage}",
                    # Port 0: no port picked here can be taken by someone else before Prometheus binds it.
                    "--web.listen-address=127.0.0.1:0",
                    "--log.level=info",  # the bound address is logged at info
                    *self.args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def _start(self) -> None:
        """Spawn it and wait until it is ready; stopped again if it never is."""
        self._spawn()
        assert self._proc is not None
        deadline = time.monotonic() + WAIT
        try:
            with httpx.Client(timeout=5) as http:
                while True:
                    if self._proc.poll() is not None:
                        raise AssertionError(f"prometheus exited with {self._proc.returncode}:\n{self.log_tail()}")
                    if not self.url and (bound := LISTENING.search(self.log.read_text(errors="replace"))):
                        self.url = f"http://{bound[1]}"
                    if self.url:
                        try:
                            if http.get(f"{self.url}/-/ready").status_code == 200:
                                return
                        except httpx.TransportError:
                            pass
                    if time.monotonic() > deadline:
                        raise AssertionError(f"prometheus was not ready within {WAIT:.0f}s:\n{self.log_tail()}")
                    time.sleep(0.1)  # waiting for a process to come up, not for a clock
        except BaseException:
            self._stop()
            raise

    def _stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
        said = self.warnings()
        if said:
            print(f"prometheus.log (warn and above):\n{said[-2000:]}", file=sys.stderr)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def warnings(self) -> str:
        """What Prometheus logged at warn level or above: its info lines are start-up chatter."""
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "".join(f"{line}\n" for line in lines if "level=info" not in line and "level=debug" not in line)

    def __enter__(self) -> PrometheusServer:
        self._start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop()

    async def __aenter__(self) -> PrometheusServer:
        # In a thread (bounded by WAIT): an exporter on this loop must go on answering meanwhile.
        await asyncio.to_thread(self._start)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self._stop)
