"""Defence in depth for secrets: whatever text leaves the process passes through a Redactor.

Secrets are never put in messages on purpose; this catches a vendor that echoes one back. Log lines
are redacted whole by their formatter (logs.install_redactor), tracebacks and non-text fields included.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import SecretStr

from aht_exporter.config import Config

MASK = "<redacted>"


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole. Very short values would
        # mask innocent text and are too weak to be worth hiding anyway.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    @classmethod
    def for_config(cls, config: Config) -> Redactor:
        values = []
        for source in config.sources:
            for name in type(source).model_fields:
                value = getattr(source, name)
                if isinstance(value, SecretStr):
                    values.append(value.get_secret_value())
        return cls(values)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text
