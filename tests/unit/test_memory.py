"""Start-up objects out of the garbage collector's traversals (aht_exporter/memory.py), and serve() doing it."""

import asyncio
import gc
import os
import signal
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from aht_exporter import cli
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
    monkeypatch.setattr(cli, "freeze_startup_objects", lambda: steps.append("freeze"))
    # The shutdown watchdog ends the process 10 s after the signal unless it has exited: here, the test run.
    monkeypatch.setattr(cli, "_shutdown_watchdog", lambda limit: steps.append(f"watchdog {limit:g}s"))
    monkeypatch.setattr(Exporter, "start", lambda self: steps.append("polling starts"))

    class Recorded(Exporter):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            steps.append("exporter built")
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

    assert await cli.serve(config, "127.0.0.1:0", on_start=on_start) == cli.EXIT_OK
    # Start-up is frozen; the exporter's runners and stores, which reloads replace, are not.
    assert steps == ["freeze", "exporter built", "served", "polling starts", "watchdog 10s"]
