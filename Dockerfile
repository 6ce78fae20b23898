# syntax=docker/dockerfile:1
# aht-exporter: a slim, non-root image.
#
#   docker build -t aht-exporter .
#   docker run --rm -p 9779:9779 aht-exporter --demo                  # simulators, no config needed
#   docker run --rm -p 9779:9779 -v "$PWD/examples/genesys.yaml:/etc/aht-exporter/config.yaml:ro" \
#     -e GENESYS_CLIENT_ID -e GENESYS_CLIENT_SECRET aht-exporter
#
# Arguments replace CMD, so `--demo` runs without the default --config.file; with no arguments the config
# is read from /etc/aht-exporter/config.yaml (also the working directory, so `--check-config` finds it).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install the package and its dependencies into a virtualenv ---------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/aht-exporter
COPY pyproject.toml README.md ./
COPY aht_exporter ./aht_exporter
RUN /opt/aht-exporter/bin/pip install --no-cache-dir . \
    && /opt/aht-exporter/bin/aht-exporter --version

# --- runtime: the virtualenv on the same base image, no build context, no pip cache ----------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="aht-exporter" \
      org.opencontainers.image.description="Prometheus exporter for contact-center Average Handle Time" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without looking the name up.
RUN groupadd --system --gid 10001 aht \
    && useradd --system --uid 10001 --gid aht --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin aht
COPY --from=build /opt/aht-exporter /opt/aht-exporter
ENV PATH=/opt/aht-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AHT_HEALTHCHECK_URL=http://127.0.0.1:9779/-/healthy
# The store (--storage.path): buckets and _total counters that survive a restart. Mount a volume here, or
# every new container resets the counters (docs/exact-ranges.md).
RUN mkdir -p /var/lib/aht-exporter && chown 10001:10001 /var/lib/aht-exporter
VOLUME ["/var/lib/aht-exporter"]
WORKDIR /etc/aht-exporter
USER 10001:10001
EXPOSE 9779
# No curl in slim images: Python asks. Any failure (refused, timeout, non-2xx) raises, and exits 1.
# Serving on another port or with TLS? Set AHT_HEALTHCHECK_URL to match.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['AHT_HEALTHCHECK_URL'], timeout=4)"]
ENTRYPOINT ["aht-exporter"]
CMD ["--config.file=/etc/aht-exporter/config.yaml", "--storage.path=/var/lib/aht-exporter"]
