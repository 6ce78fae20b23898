"""The provider registry: one line per vendor."""

from aht_exporter.providers.base import Provider
from aht_exporter.providers.genesys import GenesysProvider
from aht_exporter.providers.koreai import KoreAIProvider

PROVIDERS: dict[str, type[Provider]] = {
    GenesysProvider.name: GenesysProvider,
    KoreAIProvider.name: KoreAIProvider,
}

__all__ = ["PROVIDERS", "Provider"]
