"""Every test starts from the same logging state.

`aht_exporter.cli.main()`, called in-process by some tests, configures logging as the daemon does: the root
logger's level and handlers (a stream on that test's captured stderr), warnings captured, rate limits on
noisy loggers. Left in place, that made later tests see INFO records they never asked for, and write to a
closed stream.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from aht_exporter.logs import NOISY_LOGGERS


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    noisy = {name: list(logging.getLogger(name).filters) for name in NOISY_LOGGERS}
    yield
    root.setLevel(level)
    root.handlers[:] = handlers
    logging.captureWarnings(False)
    for name, filters in noisy.items():
        logging.getLogger(name).filters[:] = filters
