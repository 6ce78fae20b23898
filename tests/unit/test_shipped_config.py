import re
from pathlib import Path

import pytest

from aht_exporter.config import parse_config
from aht_exporter.model import ConfigError
from aht_exporter.providers import PROVIDERS

ROOT = Path(__file__).resolve().parents[2]
ENV = {name: "x-value" for name in re.findall(r"\$\{([A-Z0-9_]+)\}", (ROOT / "config.yaml").read_text())}
SHIPPED = (ROOT / "config.yaml").read_text()


def test_the_shipped_config_yaml_is_valid_with_its_env_vars_set() -> None:
    config = parse_config(SHIPPED, "config.yaml", ENV)
    assert {s.provider for s in config.sources} == set(PROVIDERS), "one source of every provider"


def test_the_shipped_config_yaml_names_its_missing_secrets() -> None:
    with pytest.raises(ConfigError, match="environment variable GENESYS_CLIENT_ID is not set"):
        parse_config(SHIPPED, "config.yaml", {})


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
