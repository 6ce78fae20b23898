"""The provider registry: one line per vendor."""

from aht_exporter.providers.base import Provider
from aht_exporter.providers.genesys import GenesysProvider

PROVIDERS: dict[str, type[Provider]] = {
    GenesysProvider.name: GenesysProvider,
}

__all__ = ["PROVIDERS", "Provider"]
