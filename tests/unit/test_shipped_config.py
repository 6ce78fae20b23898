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
