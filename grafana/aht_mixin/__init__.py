"""Dashboards, alert rules and recording rules for aht-exporter, as code.

Plain Python data (no Grafana SDK): every artefact is a dict rendered to JSON or YAML by `build.py`,
so a reviewer reads the PromQL right here. The artefacts depend on the metric contract (SPEC.md), not on
the exporter's code, with one exception: each provider's default data-age threshold comes from what the
provider declares (`aht_exporter.providers`, `data_age`), so a new provider's alerts need no edit here.
"""
