"""Defence in depth for secrets: whatever text leaves the process passes through a Redactor.

Secrets are never put in messages on purpose; this catches a vendor that echoes one back.
"""

from __future__ import annotations

import logging
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


class RedactingFilter(logging.Filter):
    """Masks secrets in every log record's message and extra fields."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor(record.getMessage())
        record.args = None
        for key, value in list(record.__dict__.items()):
            if isinstance(value, str) and key not in ("msg", "name", "levelname", "pathname", "filename"):
                record.__dict__[key] = self.redactor(value)
        return True
