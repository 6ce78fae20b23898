"""What the benchmarks share: result tables and targets, synthetic series, a clock two processes share,
the simulator subprocess, and RSS readings.

Not a benchmark itself: `python bench/<name>.py` runs one, `python bench/run_all.py` runs them all.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import struct
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aht_exporter.clock import FakeClock
from aht_exporter.model import Field, Names, Sums, make_labels
from aht_exporter.store import Snapshot

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent

# The scenario every benchmark shares: a Genesys source grouped by agent, 30m buckets, windows 30m and 1h.
# What providers.genesys.fields_for(["agent"]) gives (the smoke test checks it), named here so that the
# servers of the scrape benchmark need not import the whole exporter.
AGENT_FIELDS = frozenset(
    {
        Field.HANDLE_TIME,
        Field.CONTACTS_HANDLED,
        Field.TALK_TIME,
        Field.HOLD_TIME,
        Field.ACW_TIME,
        Field.CONTACTS_ANSWERED,
    }
)
WINDOWS = ("30m", "1h")
SERIES_PER_AGENT = len(WINDOWS) * (len(AGENT_FIELDS) + 1)  # + aht_seconds in each window

# 2026-03-02 10:01:00 UTC: a poll with delay 1m at this instant works on the buckets closed by 10:00.
T0 = 1772445600 + 60


# --- results ------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    goal: str
    measured: str
    met: bool | None  # None: could not be measured here
    why: str = ""

    @property
    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: "not measured"}[self.met]


@dataclass
class Result:
    """One benchmark's table, its targets and the notes a reader needs to trust the figures."""

    title: str
    command: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        widths = [
            max(len(c), *(len(r[i]) for r in self.rows)) if self.rows else len(c) for i, c in enumerate(self.columns)
        ]
        line = "  ".join("{:<%d}" % w for w in widths)  # noqa: UP031 - a format built from widths
        out = [f"== {self.title} ==", f"$ {self.command}", line.format(*self.columns)]
        out.append("  ".join("-" * w for w in widths))
        out += [line.format(*r) for r in self.rows]
        for t in self.targets:
            out.append(
                f"target: {t.name}: {t.goal}: measured {t.measured}: {t.verdict}" + (f" ({t.why})" if t.why else "")
            )
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def markdown(self) -> str:
        out = [f"### {self.title}", "", f"`{self.command}`", ""]
        out.append("| " + " | ".join(self.columns) + " |")
        out.append("|" + "|".join("---" for _ in self.columns) + "|")
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            out.append("")
            out += [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


# --- synthetic series ---------------------------------------------------------------------------------


def agent_snapshot(series: int, seed: int = 1) -> Snapshot:
    """About `series` data series of a Genesys source grouped by agent, with realistic values.

    Agent ids are UUIDs as Genesys's are, every value is a sum of whole milliseconds, and every agent
    has a name: so the body is as long and compresses as well as a real one (identical values would
    gzip far better than real data does).
    """
    rng = random.Random(seed)
    agents = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(max(1, series // SERIES_PER_AGENT))]
    windows: dict[str, dict[tuple[tuple[str, str], ...], Sums]] = {}
    for window, most in zip(WINDOWS, (5, 10), strict=True):
        groups: dict[tuple[tuple[str, str], ...], Sums] = {}
        for agent in agents:
            handled = rng.randint(1, most)
            talk = sum(rng.randint(30_000, 900_000) for _ in range(handled))
            hold = rng.randint(0, 180_000 * handled)
            acw = rng.randint(0, 120_000 * handled)
            groups[make_labels(agent=agent)] = Sums(
                handle_time_seconds=(talk + hold + acw) / 1000,
                contacts_handled=float(handled),
                talk_time_seconds=talk / 1000,
                hold_time_seconds=hold / 1000,
                acw_time_seconds=acw / 1000,
                contacts_answered=float(handled),
            )
        windows[window] = groups
    names = Names(agents={a: f"Agent {i}" for i, a in enumerate(agents)})
    return Snapshot(data_end=T0 - 60, fields=AGENT_FIELDS, windows=windows, names=names)


# --- a clock shared with the simulator process --------------------------------------------------------


class SharedClock(FakeClock):
    """A FakeClock whose time lives in a memory-mapped file, so a simulator in another process sees
    exactly the time the exporter is told: time is compressed on both sides and nobody waits."""

    def __init__(self, path: Path, start: float | None = None) -> None:
        if start is not None:
            path.write_bytes(struct.pack("d", start))
        super().__init__(start or 0.0)
        self._file = path.open("r+b")
        self._map = mmap.mmap(self._file.fileno(), 8)

    def now(self) -> float:
        return float(struct.unpack_from("d", self._map)[0])

    def set(self, t: float) -> None:
        struct.pack_into("d", self._map, 0, float(t))

    def advance(self, seconds: float) -> None:
        self.set(self.now() + seconds)


# --- the simulator in a process of its own ------------------------------------------------------------


class SimulatorProcess:
    """`bench/simproc.py` in a subprocess: the exporter's CPU and memory are then measured alone."""

    def __init__(self, providers: Sequence[str], agents: int, contacts_per_slot: float, clock_file: Path) -> None:
        cmd = [
            sys.executable,
            str(BENCH_DIR / "simproc.py"),
            f"--providers={','.join(providers)}",
            f"--agents={agents}",
            f"--contacts-per-slot={contacts_per_slot}",
            f"--clock={clock_file}",
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=bench_env())
        self._hello: dict[str, dict[str, Any]] = self._read()

    def source(self, provider: str) -> dict[str, Any]:
        """The raw config of a source pointed at the provider's simulator."""
        return dict(self._hello[provider]["source"])

    def _read(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the simulator process exited with {self.proc.wait()}")
        return json.loads(line)

    def requests(self, provider: str) -> dict[str, int]:
        """Requests the provider's simulator has answered so far, by path."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("requests\n")
        self.proc.stdin.flush()
        return dict(self._read()[provider])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


_SCRAPER = """
import json, sys, urllib.request
for line in sys.stdin:
    url, headers = json.loads(line)
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=120) as r:
        print(json.dumps([r.status, len(r.read())]), flush=True)
"""


class ScraperProcess:
    """Scrapes from a process of its own, so the bodies it receives do not count in the exporter's memory."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SCRAPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def scrape(self, url: str, headers: dict[str, str]) -> int:
        """Fetch `url`; return the body's length as sent (compressed when gzip was asked for)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps([url, headers]) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the scraper process exited with {self.proc.wait()}")
        status, length = json.loads(line)
        if status != 200:
            raise RuntimeError(f"{url} answered {status}")
        return int(length)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


def bench_env() -> dict[str, str]:
    """The environment for a child process: the repository importable, as it is for this one."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in sorted(after.items()) if v != before.get(k, 0)}


# --- memory -------------------------------------------------------------------------------------------


def _status_mb(field: str) -> float:
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith(field)) / 1024


def rss_mb() -> float:
    """This process's resident set size now, in MiB (Linux /proc)."""
    return _status_mb("VmRSS:")


def peak_rss_mb() -> float:
    """Its highest RSS so far. VmHWM, not ru_maxrss: that one starts at the RSS of the process that
    started this one, so a benchmark started by a big parent (run_all) would read the parent's."""
    return _status_mb("VmHWM:")


def fmt_requests(by_path: dict[str, int], short: Sequence[tuple[str, str]] = ()) -> str:
    """`12 (aggregates 1, token 1, users 10)`: the total and its parts, paths shortened to their last word."""
    parts = []
    for path, n in by_path.items():
        name = dict(short).get(path, path.rstrip("/").rsplit("/", 1)[-1])
        parts.append(f"{name} {n}")
    return f"{sum(by_path.values())} ({', '.join(parts)})" if parts else "0"
