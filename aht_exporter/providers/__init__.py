"""The provider registry: one line per vendor."""

from aht_exporter.providers.amazon_connect import AmazonConnectProvider
from aht_exporter.providers.base import AnyProvider, Provider
from aht_exporter.providers.genesys import GenesysProvider
from aht_exporter.providers.koreai import KoreAIProvider
from aht_exporter.providers.liveperson import LivePersonProvider
from aht_exporter.providers.ozonetel import OzonetelProvider

PROVIDERS: dict[str, type[AnyProvider]] = {
    GenesysProvider.name: GenesysProvider,
    KoreAIProvider.name: KoreAIProvider,
    LivePersonProvider.name: LivePersonProvider,
    OzonetelProvider.name: OzonetelProvider,
    AmazonConnectProvider.name: AmazonConnectProvider,
}

__all__ = ["PROVIDERS", "Provider"]
