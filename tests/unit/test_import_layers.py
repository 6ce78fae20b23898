"""The package's imports run one way (issue 16): the contracts in pyproject.toml hold, they catch a
breach (a function-level import included), and the CLI loads simulator code only in demo mode."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aht_exporter.cli import build_parser
from aht_exporter.simulator.faults import Fault

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
TIMEOUT = 120  # seconds: one run takes about one on an idle machine


def lint_imports(package_root: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` over the `aht_exporter` found under `package_root`, with the contracts in `config`."""
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    return subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, str(config), "--no-cache", "--no-logo"],
        cwd=package_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def test_the_import_contracts_hold() -> None:
    run = lint_imports(ROOT, ROOT / "pyproject.toml")
    assert run.returncode == 0, run.stdout + run.stderr
    kept = re.search(r"^Contracts: (\d+) kept, 0 broken\.$", run.stdout, re.M)
    assert kept and int(kept[1]) >= 4, run.stdout  # the four below, and any added since


# A breach of each contract, appended to a copy of the package: the contract that must catch it.
BREACHES = {
    # A function-level import, as config.build_config had: import-linter sees it too.
    "config-imports-the-registry": (
        "config.py",
        "def _breach() -> None:\n    from aht_exporter.providers import PROVIDERS  # noqa: F401\n",
        "The config knows no provider: the registry hands their models in BROKEN",
    ),
    "a-provider-imports-the-scheduler": (
        "providers/genesys.py",
        "from aht_exporter import scheduler  # noqa: E402, F401\n",
        "Providers never import the exporter above them, nor the simulators BROKEN",
    ),
    "the-scheduler-imports-a-simulator": (
        "scheduler.py",
        "from aht_exporter.simulator import faults  # noqa: E402, F401\n",
        "The core never imports the simulators, except the demo entry points BROKEN",
    ),
    "a-low-layer-imports-a-higher-one": (
        "store.py",
        "from aht_exporter import exposition  # noqa: E402, F401\n",
        "Layers: each module imports only the layers below it BROKEN",
    ),
    "a-module-in-no-layer": (
        "undeclared.py",
        '"""A new module that no layer names."""\n',
        "Layers: each module imports only the layers below it BROKEN",
    ),
}


@pytest.mark.parametrize("breach", list(BREACHES))
def test_each_contract_catches_a_breach(breach: str, tmp_path: Path) -> None:
    path, code, broken = BREACHES[breach]
    shutil.copytree(ROOT / "aht_exporter", tmp_path / "aht_exporter", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "aht_exporter" / path
    target.write_text((target.read_text() if target.exists() else "") + "\n\n" + code)
    run = lint_imports(tmp_path, ROOT / "pyproject.toml")
    assert run.returncode == 1, run.stdout + run.stderr
    assert broken in run.stdout, run.stdout


def loaded_modules(code: str) -> list[str]:
    """The `aht_exporter` modules a fresh interpreter has loaded after running `code` (which may print
    lines of its own before the last, a JSON list of them)."""
    code += "\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('aht_exporter'))))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    modules: list[str] = json.loads(run.stdout.splitlines()[-1])
    return modules


def test_importing_the_cli_loads_no_simulator() -> None:
    modules = loaded_modules("import aht_exporter.cli")
    assert "aht_exporter.cli" in modules and "aht_exporter.registry" in modules  # it did load the CLI
    assert [m for m in modules if m.startswith("aht_exporter.simulator")] == []


def test_a_config_run_loads_no_simulator(tmp_path: Path) -> None:
    """`--check-config` builds the parser, loads the config with every provider's model and prints it:
    everything a production start does before it serves, and no simulator code on the way."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "sources:\n  - name: g\n    provider: genesys\n    region: mypurecloud.ie\n"
        "    client_id: id\n    client_secret: s3\n"
    )
    code = (
        f"from aht_exporter.cli import main\nassert main(['--config.file', {str(config)!r}, '--check-config']) == 0\n"
    )
    modules = loaded_modules(code)
    assert "aht_exporter.providers" in modules
    assert [m for m in modules if m.startswith("aht_exporter.simulator")] == []
    # botocore (7 MiB of RSS) only for an AWS source: loaded when one first signs or resolves credentials.
    assert "aht_exporter.providers.amazon_connect" in modules
    assert [m for m in modules if m.startswith("botocore")] == []


def test_the_help_still_lists_every_demo_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """The faults come from the simulators, imported when the help is printed, not when the parser is built."""
    monkeypatch.setenv("COLUMNS", "100000")  # one line per option: argparse wraps at hyphens too
    text = build_parser().format_help()
    assert "(faults: " + ", ".join(f.value for f in Fault) + ")" in text
