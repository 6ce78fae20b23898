"""Golden exposition files: one per provider, tests/golden/<provider>.prom, compared byte for byte.

Each holds what /metrics serves after two polls of the provider's demo sources against its simulator
(golden.py: fixed clock, fixed workload), less the families listed in golden.DROPPED. A change to the
output shows in the diff of the file. `AHT_UPDATE_GOLDEN=1 pytest tests/conformance` rewrites them.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import subprocess

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families as text_families

from tests.conformance.cases import NAMES
from tests.conformance.golden import DROPPED, GOLDEN, UPDATE, cut, dropped, exposition, golden_path, scenario
from tests.helpers import parse_exposition
from tests.prometheus_bin import require

DIFF_LINES = 60  # of the unified diff shown when a golden file differs


@pytest.mark.parametrize("name", NAMES)
def test_the_exposition_matches_its_golden_file_byte_for_byte(name: str) -> None:
    path = golden_path(name)
    got = exposition(name).golden
    if os.environ.get(UPDATE) == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(got)
    if not path.exists():
        pytest.fail(
            f"no golden file {path.relative_to(GOLDEN.parent.parent)}: make it with {UPDATE}=1 pytest tests/conformance"
        )
    want = path.read_bytes()
    if got != want:
        diff = difflib.unified_diff(
            want.decode().splitlines(), got.decode().splitlines(), f"{path.name} (golden)", f"{path.name} (now)", n=2
        )
        shown = "\n".join(line.rstrip("\n") for _, line in zip(range(DIFF_LINES), diff, strict=False))
        pytest.fail(
            f"the exposition of {name} differs from {path.name}; if the change is meant, rewrite it with "
            f"{UPDATE}=1 and review the diff:\n{shown}",
            pytrace=False,
        )


@pytest.mark.parametrize("name", NAMES)
def test_only_the_listed_families_are_left_out(name: str) -> None:
    """The drop list names families that exist (a renamed one would leave the list stale), and the golden
    file holds every sample of every other family, health and data alike."""
    result = exposition(name)
    left_out = cut(result.text)[1]
    assert set(DROPPED) <= left_out, f"listed but not in the exposition: {sorted(set(DROPPED) - left_out)}"
    kept = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_families(result.text.decode())
        if not dropped(family.name)
        for s in family.samples
    }
    assert parse_exposition(result.golden.decode()) == kept
    assert any(key[0] == "aht_exporter_source_up" and ("provider", name) in key[1] for key in kept)


@pytest.mark.parametrize("name", NAMES)
def test_the_simulators_address_is_not_in_the_exposition(name: str) -> None:
    """A golden file must not depend on the ephemeral port, nor /metrics show where a vendor lives."""
    result = exposition(name)
    address = result.simulator_url.split("://", 1)[1].rstrip("/")
    assert address.encode() not in result.text
    assert address.encode() not in result.openmetrics


@pytest.mark.parametrize("name", NAMES)
def test_a_second_run_on_another_port_renders_the_same_bytes(name: str) -> None:
    again = asyncio.run(scenario(name))
    assert again.simulator_url != exposition(name).simulator_url
    assert again.golden == exposition(name).golden


@pytest.mark.prometheus
@pytest.mark.parametrize("name", NAMES)
def test_promtool_accepts_the_golden_exposition(name: str) -> None:
    promtool = require("promtool")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition(name).golden, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


@pytest.mark.parametrize("name", NAMES)
def test_the_openmetrics_rendering_parses_to_the_same_samples(name: str) -> None:
    result = exposition(name)
    text = result.openmetrics.decode()
    assert text.endswith("# EOF\n")
    parsed = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in openmetrics_families(text)  # type: ignore[no-untyped-call]
        if not dropped(family.name)
        for s in family.samples
    }
    assert parsed == parse_exposition(result.golden.decode())


def test_every_golden_file_belongs_to_a_registered_provider() -> None:
    stale = sorted(p.name for p in GOLDEN.glob("*.prom") if p.stem not in NAMES)
    assert not stale, f"golden files of no registered provider: {stale} (delete them)"
