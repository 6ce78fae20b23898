"""Dashboards, alert rules and recording rules for aht-exporter, as code.

Plain Python data (no Grafana SDK): every artefact is a dict rendered to JSON or YAML by `build.py`,
so a reviewer reads the PromQL right here. Nothing in this package imports `aht_exporter`: the
artefacts depend on the metric contract (SPEC.md), not on the exporter's code.
"""
