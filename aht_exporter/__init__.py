"""aht-exporter: contact-center Average Handle Time for Prometheus."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aht-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
