"""Start-up objects out of the garbage collector's traversals (aht_exporter/memory.py), and serve() doing it."""

import asyncio
import gc
import os
import signal
import sys
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from aht_exporter import cli, memory
from aht_exporter.memory import freeze_startup_objects
from aht_exporter.registry import build_config
from aht_exporter.scheduler import Exporter


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the suite runs as it did


@pytest.mark.usefixtures("unfrozen")
def test_freezing_collects_the_garbage_first_and_freezes_only_what_lives() -> None:
    cycle, alive = Node(), Node()
    cycle.other, alive.other = cycle, alive  # a cycle, and a cycle still referred to
    gone = weakref.ref(cycle)
    del cycle
    freeze_startup_objects()
    assert gone() is None  # collected before the freeze: garbage is never frozen
    assert gc.get_freeze_count() > 10_000  # the modules, types and objects of this process
    assert alive.other is alive
    # What a full collection walks: none of them any more, only what is made from now on.
    assert not any(obj is alive for obj in gc.get_objects())
    assert len(gc.get_objects()) < gc.get_freeze_count() // 10


@pytest.mark.asyncio
async def test_serve_freezes_start_up_objects_before_it_builds_the_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    steps: list[str] = []

    def tune_malloc() -> list[str]:
        steps.append("malloc tuned")
        return []

    monkeypatch.setattr(cli, "tune_malloc", tune_malloc)
    monkeypatch.setattr(cli, "warm_up", lambda: steps.append("HTTP stack loaded"))
    monkeypatch.setattr(cli, "freeze_startup_objects", lambda: steps.append("freeze"))
    # The shutdown watchdog ends the process 10 s after the signal unless it has exited: here, the test run.
    monkeypatch.setattr(cli, "_shutdown_watchdog", lambda limit: steps.append(f"watchdog {limit:g}s"))
    monkeypatch.setattr(Exporter, "start", lambda self: steps.append("polling starts"))

    class Recorded(Exporter):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            steps.append(f"exporter built, GIL switch interval {sys.getswitchinterval():g} s")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(cli, "Exporter", Recorded)
    source = {
        "name": "g",
        "provider": "genesys",
        "base_url": "http://127.0.0.1:9",
        "login_url": "http://127.0.0.1:9",
        "client_id": "id",
        "client_secret": "secret",
    }
    config = build_config({"sources": [source]}, "t.yaml", {})

    def on_start(_: Exporter) -> None:
        steps.append("served")
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)  # then stop, as a pod would

    interval = sys.getswitchinterval()
    try:
        assert await cli.serve(config, "127.0.0.1:0", on_start=on_start) == cli.EXIT_OK
    finally:
        sys.setswitchinterval(interval)
    # Start-up is frozen; the exporter's runners and stores, which reloads replace, are not.
    assert steps == [
        "malloc tuned",
        "HTTP stack loaded",
        "freeze",
        "exporter built, GIL switch interval 0.002 s",
        "served",
        "polling starts",
        "watchdog 10s",
    ]


def test_malloc_is_tuned_unless_the_environment_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    monkeypatch.setattr(memory, "_MALLOPT", mallopt)
    # glibc's malloc.h: M_MMAP_THRESHOLD -3, M_ARENA_MAX -8.
    assert memory.tune_malloc({}) == ["MALLOC_MMAP_THRESHOLD_=1048576", "MALLOC_ARENA_MAX=2"]
    assert calls == [(-3, 1 << 20), (-8, 2)]
    calls.clear()
    assert memory.tune_malloc({"MALLOC_ARENA_MAX": "4"}) == ["MALLOC_MMAP_THRESHOLD_=1048576"]
    assert calls == [(-3, 1 << 20)]
    calls.clear()
    assert memory.tune_malloc({"GLIBC_TUNABLES": "glibc.malloc.arena_max=8"}) == []
    assert calls == []
    monkeypatch.setattr(memory, "_MALLOPT", lambda param, value: 0)  # refused (not glibc's malloc)
    assert memory.tune_malloc({}) == []
    monkeypatch.setattr(memory, "_MALLOPT", None)  # no such function (musl, macOS)
    assert memory.tune_malloc({}) == []


def test_this_c_library_takes_the_tuning() -> None:
    if memory._MALLOPT is None:
        pytest.skip("this C library has no mallopt (not glibc)")
    # Setting either again is harmless: the values are the ones serve() sets.
    assert memory.tune_malloc({}) == ["MALLOC_MMAP_THRESHOLD_=1048576", "MALLOC_ARENA_MAX=2"]
