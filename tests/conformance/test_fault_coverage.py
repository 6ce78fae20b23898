"""The fault matrix (tests/e2e/test_fault_matrix.py) runs every simulator fault against every registered
provider end to end. Checked here from the parameters its tests are marked with, whatever they are built
from (collecting it in a second pytest costs 10 s on two cores; reading its marks costs nothing)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from _pytest.mark.structures import ParameterSet

import tests.e2e.test_fault_matrix as matrix
from aht_exporter.providers import PROVIDERS
from aht_exporter.simulator.faults import Fault

MATRIX = "tests/e2e/test_fault_matrix.py"


def parameter_rows(module: object) -> Iterator[dict[str, Any]]:
    """Each parameter set of each parametrised test of `module`, as {argument name: value}."""
    for test in vars(module).values():
        for mark in getattr(test, "pytestmark", []):
            if mark.name != "parametrize":
                continue
            argnames, argvalues = mark.args[0], mark.args[1]
            names = [n.strip() for n in argnames.split(",")] if isinstance(argnames, str) else list(argnames)
            for value in argvalues:
                values = value.values if isinstance(value, ParameterSet) else value
                yield dict(zip(names, values if len(names) > 1 else (values,), strict=True))


def test_the_fault_matrix_runs_every_fault_against_every_registered_provider() -> None:
    rows = list(parameter_rows(matrix))
    pairs = {(row["provider"], Fault(row["fault"])) for row in rows if {"provider", "fault"} <= row.keys()}
    missing = [f"{name}:{fault.value}" for name in PROVIDERS for fault in Fault if (name, fault) not in pairs]
    assert not missing, f"{MATRIX} does not run these provider:fault pairs: {missing}"
    withdrawn = {row["provider"] for row in rows if row.keys() == {"provider"}}
    absent = sorted(set(PROVIDERS) - withdrawn)
    assert not absent, f"{MATRIX} does not check the withdrawal after stale_after failures for {absent}"


def test_the_reading_of_marks_sees_what_pytest_collects() -> None:
    """A check of the check: rows read from a module made here, parametrised in each way pytest allows."""
    import pytest

    class Module:
        @pytest.mark.parametrize(("provider", "fault"), [("a", "503"), pytest.param("b", "401", id="x")])
        def test_pairs(self) -> None: ...

        @pytest.mark.parametrize("provider, fault", [("c", "reset")])
        def test_text_names(self) -> None: ...

        @pytest.mark.parametrize("provider", ["d"])
        def test_one(self) -> None: ...

    rows = list(parameter_rows(Module))
    assert sorted(rows, key=str) == sorted(
        [
            {"provider": "a", "fault": "503"},
            {"provider": "b", "fault": "401"},
            {"provider": "c", "fault": "reset"},
            {"provider": "d"},
        ],
        key=str,
    )
