import os
import re
from pathlib import Path

import pytest

from aht_exporter.model import ConfigError
from aht_exporter.providers import PROVIDERS
from aht_exporter.registry import parse_config

ROOT = Path(__file__).resolve().parents[2]
ENV = {name: "x-value" for name in re.findall(r"\$\{([A-Z0-9_]+)\}", (ROOT / "config.yaml").read_text())}
SHIPPED = (ROOT / "config.yaml").read_text()


def test_the_shipped_config_yaml_is_valid_with_its_env_vars_set() -> None:
    config = parse_config(SHIPPED, "config.yaml", ENV)
    assert {s.provider for s in config.sources} == set(PROVIDERS), "one source of every provider"


def test_the_shipped_config_yaml_names_its_missing_secrets() -> None:
    with pytest.raises(ConfigError, match="environment variables not set: GENESYS_CLIENT_ID"):
        parse_config(SHIPPED, "config.yaml", {})


EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
README = (ROOT / "README.md").read_text()
SAMPLE_VALUES = {
    "LP_ACCOUNT_ID": "12345678",
    "KORE_ORG_ID": "o-1234",
    "KORE_ACCOUNT_ID": "a-1234",
    "CONNECT_INSTANCE_ARN": "arn:aws:connect:eu-west-2:123456789012:instance/11111111-2222-4333-8444-555555555555",
}


def readme_variables(config: str) -> tuple[set[str], set[str]]:
    """The variables README's "Running it for real" table names for `config`: (required, optional)."""
    rows = [line for line in README.splitlines() if line.startswith(f"| `{config}` |")]
    assert len(rows) == 1, f"README names {config} in one table row"
    cell = rows[0].split("|")[2]
    required, _, optional = cell.partition("optionally")
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", required)), set(re.findall(r"`([A-Z][A-Z0-9_]+)`", optional))


def file_variables(text: str) -> tuple[set[str], set[str]]:
    """(${VAR}s without a default, ${VAR:-default}s) of a config file, comments left out."""
    text = re.sub(r"#.*", "", text)
    return set(re.findall(r"\$\{([A-Z0-9_]+)\}", text)), set(re.findall(r"\$\{([A-Z0-9_]+):-", text))


def test_there_is_one_example_per_provider() -> None:
    assert [p.stem for p in EXAMPLES] == sorted(PROVIDERS)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_loads_with_only_the_variables_the_readme_names(path: Path) -> None:
    text = path.read_text()
    required, optional = readme_variables(f"examples/{path.name}")
    assert file_variables(text) == (required, optional)
    config = parse_config(text, str(path), {v: SAMPLE_VALUES.get(v, "x-value") for v in required})
    assert [s.provider for s in config.sources] == [path.stem]


def test_the_readme_names_every_variable_of_the_full_config() -> None:
    required, optional = readme_variables("config.yaml")
    assert file_variables(SHIPPED) == (required, set()) and not optional


def test_the_readme_commands_run_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    from aht_exporter.cli import main

    start = README.index("## Running it for real")
    block = README[README.index("```sh\n", start) + 6 : README.index("```\n", README.index("```sh\n", start) + 6)]
    exported = re.findall(r"([A-Z][A-Z0-9_]+)=\.\.\.", block)
    check = [line.split("#")[0].split()[1:] for line in block.splitlines() if "--check-config" in line]
    assert exported and len(check) == 1
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        for name in list(os.environ):
            if re.match(r"(GENESYS|LP|OZONETEL|KORE)_", name):
                mp.delenv(name)
        for name in exported:
            mp.setenv(name, "x-value")
        assert main(check[0]) == 0, capsys.readouterr().err


def test_check_config_lists_every_unset_variable_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    from aht_exporter.cli import main

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        for name in list(os.environ):
            if re.match(r"(GENESYS|LP|OZONETEL|KORE)_", name):
                mp.delenv(name)
        assert main(["--check-config", "--config.file=examples/genesys.yaml"]) == 2
        err = capsys.readouterr().err
        assert err == (
            "examples/genesys.yaml: environment variables not set: GENESYS_CLIENT_ID (sources[0].client_id), "
            "GENESYS_CLIENT_SECRET (sources[0].client_secret)\n"
        )
        assert main(["--check-config", "--config.file=config.yaml"]) == 2
        line = capsys.readouterr().err
    assert line.count("\n") == 1
    assert re.findall(r"([A-Z][A-Z0-9_]+) \(sources", line) == [
        "GENESYS_CLIENT_ID",
        "GENESYS_CLIENT_SECRET",
        "LP_CLIENT_ID",
        "LP_CLIENT_SECRET",
        "OZONETEL_USER",
        "OZONETEL_API_KEY",
        "KORE_ACCOUNT_ID",
        "KORE_ORG_ID",
        "KORE_CLIENT_ID",
        "KORE_CLIENT_SECRET",
    ]


def test_check_config_of_every_provider_shows_no_secret(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from aht_exporter.cli import main

    secret_env = {name: f"SECRET-{name}-7f3a" for name in ENV}
    path = tmp_path / "config.yaml"
    path.write_text(SHIPPED)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in secret_env.items():
            mp.setenv(name, value)
        assert main([f"--config.file={path}", "--check-config"]) == 0
    out, err = capsys.readouterr()
    secret_keys = {"GENESYS_CLIENT_SECRET", "LP_CLIENT_SECRET", "OZONETEL_API_KEY", "KORE_CLIENT_SECRET"}
    assert secret_keys <= set(secret_env)
    for name in secret_keys:
        assert secret_env[name] not in out + err, name
    assert secret_env["GENESYS_CLIENT_ID"] in out  # ids are not secrets: shown, so the output is useful
