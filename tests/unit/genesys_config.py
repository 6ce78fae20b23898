"""A valid Genesys source config for tests, with overrides."""

from typing import Any

from aht_exporter.providers.genesys import GenesysConfig
from aht_exporter.registry import build_config

API = "https://api.mypurecloud.ie"
LOGIN = "https://login.mypurecloud.ie"
SECRET = "gen-secret-Zq81xV"


def genesys_config(**overrides: Any) -> GenesysConfig:
    raw: dict[str, Any] = {
        "name": "genesys-eu",
        "provider": "genesys",
        "region": "mypurecloud.ie",
        "client_id": "client-123",
        "client_secret": SECRET,
    }
    raw.update(overrides)
    config = build_config({"sources": [raw]}, "test.yaml", {})
    source = config.sources[0]
    assert isinstance(source, GenesysConfig)
    return source
