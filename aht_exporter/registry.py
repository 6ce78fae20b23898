"""The config, read with every registered provider: the entry points that load one (`load_config`,
`parse_config`, `build_config`) and what reload needs to know of all providers at once (`all_secret_keys`).

aht_exporter.config validates each source against the model it is handed and imports no provider, since
every provider imports it (for SourceConfig). This module imports both, so imports run one way:
config <- providers <- registry <- the CLI, reload, backfill and the demo.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from aht_exporter import config
from aht_exporter.config import Config, SourceConfig, secret_keys
from aht_exporter.providers import PROVIDERS


class _SourceModels(Mapping[str, type[SourceConfig]]):
    """`provider:` name -> the model its sources are validated against: a view of PROVIDERS, read at each
    lookup, so that the config and the scheduler always agree on which providers exist (a test that
    registers a provider of its own registers it for both)."""

    def __getitem__(self, name: str) -> type[SourceConfig]:
        return PROVIDERS[name].config_model

    def __iter__(self) -> Iterator[str]:
        return iter(PROVIDERS)

    def __len__(self) -> int:
        return len(PROVIDERS)


SOURCE_MODELS = _SourceModels()


def all_secret_keys() -> frozenset[str]:
    """Every provider's secret keys: a value under one of these, in a file that failed to load, may be a
    secret."""
    return frozenset(key for model in SOURCE_MODELS.values() for key in secret_keys(model))


def load_config(path: str | Path) -> Config:
    """The config file at `path`, or a ConfigError `<file>: <key path>: <what is wrong>`."""
    return config.load_config(path, SOURCE_MODELS)


def parse_config(text: str, name: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    """A config's YAML text (`name` is the file it came from, for the messages; `env` the environment its
    ${VAR}s come from, the process's by default), or a ConfigError."""
    return config.parse_config(text, SOURCE_MODELS, name, env)


def build_config(raw: object, name: str, env: Mapping[str, str]) -> Config:
    """A config built in code (the demo, the benchmarks): `raw` as parsed YAML would be. A problem is raised
    as config.build_config raises it, unworded (parse_config turns it into a ConfigError)."""
    return config.build_config(raw, SOURCE_MODELS, name, env)
