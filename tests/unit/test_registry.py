"""The config validates sources against the provider models it is handed; the registry hands it every
registered provider's (issue 16: config imports no provider)."""

from __future__ import annotations

from typing import Literal, cast

import pytest
from pydantic import SecretStr

from aht_exporter import config, registry
from aht_exporter.config import SourceConfig
from aht_exporter.model import ConfigError
from aht_exporter.providers import PROVIDERS
from aht_exporter.providers.base import AnyProvider
from aht_exporter.providers.genesys import GenesysConfig


class ToyConfig(SourceConfig):
    """A provider the package does not have: its model is all the config needs to know of it."""

    provider: Literal["toy"]
    toy_key: SecretStr


class ToyProvider:
    config_model = ToyConfig


TOY = "sources:\n  - name: t\n    provider: toy\n    base_url: https://toy.example\n    toy_key: abc\n"
GENESYS = (
    "sources:\n  - name: g\n    provider: genesys\n    region: mypurecloud.ie\n    client_id: i\n    client_secret: s\n"
)


def test_the_config_validates_a_source_against_the_model_it_is_handed() -> None:
    (source,) = config.parse_config(TOY, {"toy": ToyConfig}, "toy.yaml", {}).sources
    assert isinstance(source, ToyConfig)
    assert (source.name, source.toy_key.get_secret_value()) == ("t", "abc")


def test_a_provider_not_handed_to_the_config_is_unknown_even_when_registered() -> None:
    with pytest.raises(ConfigError) as info:
        config.parse_config(GENESYS, {"toy": ToyConfig}, "c.yaml", {})
    assert str(info.value) == "c.yaml: sources[0].provider: 'genesys' is not a known provider (toy)"


def test_the_registry_reads_every_registered_provider() -> None:
    assert dict(registry.SOURCE_MODELS) == {name: cls.config_model for name, cls in PROVIDERS.items()}
    (source,) = registry.parse_config(GENESYS, "c.yaml", {}).sources
    assert isinstance(source, GenesysConfig)
    with pytest.raises(ConfigError) as info:
        registry.parse_config(TOY, "c.yaml", {})
    known = ", ".join(sorted(PROVIDERS))
    assert str(info.value) == f"c.yaml: sources[0].provider: 'toy' is not a known provider ({known})"
    assert "toy_key" not in registry.all_secret_keys() and "client_secret" in registry.all_secret_keys()


def test_a_provider_registered_later_is_read_by_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry is a view of PROVIDERS, not a copy: what the scheduler can run, the config accepts."""
    monkeypatch.setitem(PROVIDERS, "toy", cast(type[AnyProvider], ToyProvider))
    (source,) = registry.parse_config(TOY, "c.yaml", {}).sources
    assert isinstance(source, ToyConfig)
    assert "toy" in registry.SOURCE_MODELS and len(registry.SOURCE_MODELS) == len(PROVIDERS)
    assert "toy_key" in registry.all_secret_keys()  # a reload that fails masks the new provider's secrets too
