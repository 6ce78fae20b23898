"""What the conformance tests run over: the registry, and each provider's demo entry, found or failed by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from aht_exporter.providers import PROVIDERS
from aht_exporter.simulator.demo import DEMO_PROVIDERS, DemoProvider

ROOT = Path(__file__).resolve().parents[2]

# Read at collection: a provider registered later is a new set of cases, with no edit here.
NAMES = sorted(PROVIDERS)


def demo_of(name: str) -> DemoProvider:
    """The provider's demo entry (its simulator and demo sources), or a failure saying where it is missing."""
    demo = DEMO_PROVIDERS.get(name)
    if demo is None:
        pytest.fail(
            f"provider {name!r} is registered but has no entry in DEMO_PROVIDERS "
            "(aht_exporter/simulator/demo.py): add its simulator and demo sources there"
        )
    return demo
