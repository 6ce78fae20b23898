"""Every benchmark runs, at a tiny size, so that none of them can rot. No timing is asserted.

The six run side by side, each its own command as a user runs it (the Python client stands in for wrk,
which CI does not install); run_all's report is checked on a made-up result, without a second run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import run_all  # noqa: E402  (the bench scripts import each other as top-level modules)
from common import AGENT_FIELDS, Result, Target  # noqa: E402

from aht_exporter.providers.genesys import fields_for  # noqa: E402

# run_all's own tiny sizes, but freshness for two providers (the other two cost seconds of rate-limit pacing,
# and the poll benchmark exercises all four) and memory's big scenario only (it runs the same code).
TINY = {
    **run_all.TINY,
    "freshness": [*run_all.TINY["freshness"], "--providers=genesys,ozonetel"],
    "memory": [*run_all.TINY["memory"], "--held-polls=3", "--polls=0", "--where", "--identity"],
}


@pytest.fixture(scope="module")
def outputs() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(BENCH / f"{name}.py"), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        for name, argv in TINY.items()
    }
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"bench/{name}.py failed:\n{stderr[-3000:]}"
        out[name] = stdout + stderr  # memory's --where report is on stderr
    return out


def test_scrape_tail_prints_the_per_scrape_steps_and_the_server_cpu(outputs: dict[str, str]) -> None:
    text = outputs["scrape_tail"]
    assert "== Per-scrape work at 200 series" in text and "== Server CPU per scrape at 200 series" in text
    assert "finish the gzip stream" in text and "per-scrape tail (now)" in text


def test_scrape_prints_both_tables_and_its_targets(outputs: dict[str, str]) -> None:
    text = outputs["scrape"]
    assert "== Scrape cost at saturation" in text and "== Scrape latency" in text
    assert "target: throughput against the stock server" in text
    assert "target: scrape p99" in text


def test_poll_covers_every_provider_and_counts_requests(outputs: dict[str, str]) -> None:
    text = outputs["poll"]
    for provider in ("genesys", "liveperson", "ozonetel", "koreai"):
        assert f"target: {provider}: API requests per poll: = minimum" in text
    assert "Genesys poll CPU" in text
    assert "not available" not in text


def test_memory_reports_idle_held_and_after_the_polls(outputs: dict[str, str]) -> None:
    text = outputs["memory"]
    assert "idle: server listening" in text and "after the first poll" in text and "after 3 polls" in text
    assert "target: RSS holding" in text
    assert "RSS after each of the 3 polls: highest" in text
    assert "live Python allocations since the first poll:" in text
    # What the store holds is made where the provider reads the reply (model.Micros) or in the store.
    assert "genesys.py:" in text or "store.py:" in text


def test_freshness_checks_metrics_for_each_provider(outputs: dict[str, str]) -> None:
    text = outputs["freshness"]
    assert "target: genesys: freshness" in text and "target: ozonetel: freshness" in text
    assert " NO " not in text  # /metrics showed the data up to the closed bucket


def test_loop_stall_reports_stalls_during_and_outside_polls(outputs: dict[str, str]) -> None:
    text = outputs["loop_stall"]
    assert "== Event-loop stalls, Genesys, 40 agents" in text
    rows = [line for line in text.splitlines() if line.startswith(("first poll", "1 steady polls", "outside polls"))]
    assert len(rows) == 3
    assert all(int(row.split()[-1]) > 0 for row in rows)  # the probe ran in each phase
    assert "target: event-loop stall during a poll" in text


def test_the_synthetic_series_are_those_of_a_genesys_source_grouped_by_agent() -> None:
    assert fields_for(["agent"]) == AGENT_FIELDS


@pytest.mark.parametrize("name", sorted(run_all.TINY))
def test_run_all_tiny_arguments_still_parse(name: str) -> None:
    module = __import__(name)
    module.parser().parse_args(run_all.TINY[name])


def test_run_all_rewrites_only_its_own_part_of_the_doc(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Performance\n\nhand-written\n\n{run_all.BEGIN}\nold\n{run_all.END}\n\nafter\n")
    result = Result("A table", "python bench/x.py", ["a", "b"], rows=[["1", "2"]])
    result.targets.append(Target("t", "< 1", "0.5", True))
    run_all.write(doc, run_all.report([result], 60.0, "python bench/run_all.py", "a machine"))
    text = doc.read_text()
    assert text.startswith("# Performance\n\nhand-written\n\n")
    assert text.endswith("\n\nafter\n")
    assert "old" not in text
    assert "| t | < 1 | 0.5 | met |  |" in text
    assert "| 1 | 2 |" in text


def test_the_soak_runs_with_faults_and_judges_its_rss() -> None:
    # Not in run_all (issue 6's, not issue 8's): its own command, tiny. Its exit code is its verdict,
    # which at this size says nothing; what must hold is that it ran, injected faults and judged.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(BENCH / "soak.py"), "--polls=12", "--warmup=2", "--fault-every=2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr
    assert "target: RSS grows by at most 5%" in done.stdout
    failed = next(line for line in done.stdout.splitlines() if line.startswith("source polls failed"))
    assert int(failed.split()[-1]) > 0  # the faults reached the exporter


def test_rerender_prints_a_small_poll_beside_a_big_source_and_from_scratch(outputs: dict[str, str]) -> None:
    text = outputs["rerender"]
    assert "== Re-render after one source's poll, beside 2,000 unchanged series" in text
    assert "a poll of the small source (20 series)" in text and "every source new" in text
