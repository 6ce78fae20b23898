"""The command line as a user runs it: real processes, exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aht_exporter import __version__
from aht_exporter.cli import main
from aht_exporter.clock import SystemClock
from aht_exporter.simulator.genesys import GenesysSimulator
from aht_exporter.simulator.workload import Workload
from tests.helpers import parse_exposition, samples
from tests.prometheus_bin import require


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aht_exporter", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"aht-exporter {__version__}"


def test_demo_once_prints_every_data_gauge_with_source_up() -> None:
    done = run("--demo", "--once")
    assert done.returncode == 0, done.stderr
    series = parse_exposition(done.stdout)
    for name in (
        "aht_seconds",
        "aht_handle_time_seconds",
        "aht_contacts_handled",
        "aht_talk_time_seconds",
        "aht_hold_time_seconds",
        "aht_acw_time_seconds",
        "aht_contacts_offered",
        "aht_contacts_abandoned",
    ):
        assert samples(series, name, source="demo-genesys"), name
    up = samples(series, "aht_exporter_source_up")
    assert {dict(labels)["provider"] for labels in up} == {
        "genesys",
        "liveperson",
        "ozonetel",
        "koreai",
        "amazon_connect",
    }
    assert set(up.values()) == {1.0}
    for provider in ("liveperson", "koreai", "amazon_connect"):
        assert samples(series, "aht_handle_time_seconds", provider=provider), provider
    assert samples(series, "aht_seconds", provider="liveperson", media_type="chat")
    assert samples(series, "aht_seconds", provider="ozonetel", window="2h")
    assert "Traceback" not in done.stderr
    assert 'msg="poll ok" source=demo-genesys' in done.stderr


def test_demo_once_passes_promtool_check_metrics() -> None:
    promtool = require("promtool")
    done = run("--demo", "--once")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=done.stdout, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (checked.stdout + checked.stderr).strip() == ""


def test_json_logs_are_one_object_per_line() -> None:
    import json

    done = run("--demo", "--once", "--log.format=json")
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    assert any(line.get("source") == "demo-genesys" and line["msg"] == "poll ok" for line in lines)


def test_bad_config_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "sources:\n  - name: g\n    provider: genesys\n    region: mypurecloud.ie\n"
        "    client_id: a\n    client_secret: b\n    windows: [30m, 7m]\n"
    )
    done = run(f"--config.file={config}")
    assert done.returncode == 2
    assert done.stderr == f"{config}: sources[0].windows[1]: 7m is not a multiple of the source's 30m bucket\n"
    assert done.stdout == ""


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    done = run("--config.file", str(tmp_path / "absent.yaml"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"{tmp_path / 'absent.yaml'}: cannot read: No such file or directory"


def test_check_config_prints_the_resolved_config_with_secrets_redacted(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("file-secret-9Xq\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        "sources:\n  - name: g\n    provider: genesys\n    region: mypurecloud.ie\n"
        "    client_id: ${GEN_ID}\n    client_secret: ${GEN_SECRET}\n"
        "  - name: h\n    provider: genesys\n    region: mypurecloud.de\n"
        f"    client_id: other\n    client_secret_file: {secret_file}\n"
    )
    done = run("--check-config", f"--config.file={config}", env={"GEN_ID": "client-1", "GEN_SECRET": "env-secret-7Kp"})
    assert done.returncode == 0, done.stderr
    assert "env-secret-7Kp" not in done.stdout + done.stderr
    assert "file-secret-9Xq" not in done.stdout + done.stderr
    assert "client_id: client-1" in done.stdout
    assert done.stdout.count("client_secret: '**********'") == 2


@pytest.mark.parametrize("kind", ["RequireAnyClientCert", "RequestClientCert"])
def test_a_client_auth_type_python_cannot_enforce_exits_2_naming_the_supported_ones(tmp_path: Path, kind: str) -> None:
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: s.crt\n  key_file: s.key\n  client_auth_type: {kind}\n")
    done = run(f"--web.config.file={web}", "--demo")
    assert done.returncode == 2
    assert done.stderr == (
        f"{web}: tls_server_config.client_auth_type: {kind} is not supported (a client certificate cannot be taken"
        " unverified); use NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert (the last two need"
        " client_ca_file)\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--web.config.file=/nonexistent/web.yml"], "/nonexistent/web.yml: cannot read: No such file"),
        (["--demo", "--config.file=config.yaml"], "--demo runs the built-in simulators and takes no --config.file"),
        (["--web.listen-address=nowhere"], "--web.listen-address: 'nowhere' is not host:port"),
        (["--web.listen-address=:9779", "--web.listen-address=x"], "--web.listen-address: 'x' is not host:port"),
        (["--web.telemetry-path=/-/ready"], "--web.telemetry-path: /-/ready is already the path of another endpoint"),
        (["--web.telemetry-path=metrics"], "--web.telemetry-path: 'metrics' is not an absolute URL path"),
        (["--once", "--check-config"], "not allowed with argument"),
        (["--log.level=loud"], "invalid choice: 'loud'"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_usage_exits_2(args: list[str], message: str) -> None:
    done = run(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.asyncio
async def test_once_exits_1_when_a_source_fails_and_still_prints(tmp_path: Path) -> None:
    # The simulator refuses these credentials with the vendor's 401: no retries, a fast failure,
    # while the second source polls normally.
    sim = GenesysSimulator(Workload(), SystemClock(), client_id="good", client_secret="good-secret-1")
    url = await sim.start()
    config = tmp_path / "config.yaml"
    config.write_text(
        "defaults: {windows: [1h]}\nsources:\n"
        f"  - {{name: bad, provider: genesys, base_url: '{url}', login_url: '{url}', client_id: good,"
        " client_secret: wrong-secret-1}\n"
        f"  - {{name: good, provider: genesys, base_url: '{url}', login_url: '{url}', client_id: good,"
        " client_secret: good-secret-1}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aht_exporter",
        "--once",
        f"--config.file={config}",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out_b, err_b = await asyncio.wait_for(proc.communicate(), timeout=120)
    await sim.stop()
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 1
    series = parse_exposition(out)
    assert samples(series, "aht_exporter_source_up") == {
        (("provider", "genesys"), ("source", "bad")): 0.0,
        (("provider", "genesys"), ("source", "good")): 1.0,
    }
    assert samples(series, "aht_handle_time_seconds", source="good")
    assert "wrong-secret-1" not in out + err and "good-secret-1" not in out + err
    host = url.removeprefix("http://").rstrip("/")
    assert f'msg="poll failed" source=bad error="token request to {host} POST /oauth/token: HTTP 401' in err
    assert "Traceback" not in err


def test_demo_fault_makes_a_simulator_misbehave() -> None:
    done = run("--demo", "--once", "--demo.fault=genesys:503")
    assert done.returncode == 1
    series = parse_exposition(done.stdout)
    assert samples(series, "aht_exporter_source_up", provider="genesys")
    assert set(samples(series, "aht_exporter_source_up", provider="genesys").values()) == {0.0}
    assert "HTTP 503" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("avaya:503", "no demo provider 'avaya'"),
        ("genesys:meltdown", "no fault 'meltdown'"),
        ("genesys:503:x", "the count must be a whole number"),
    ],
)
def test_a_bad_demo_fault_exits_2(spec: str, message: str) -> None:
    done = run("--demo", "--once", f"--demo.fault={spec}")
    assert done.returncode == 2
    assert message in done.stderr


def test_demo_fault_needs_demo() -> None:
    done = run("--once", "--demo.fault=genesys:503")
    assert done.returncode == 2
    assert "--demo.fault needs --demo" in done.stderr
