"""The conformance suite: what every registered provider passes, parametrised over the registry (PROVIDERS).

A provider added to aht_exporter/providers/__init__.py and to the demo (DEMO_PROVIDERS) is covered here
with no edit to these files; what it lacks (a demo entry, a docs page, an example, a golden file) fails a
test that names it. Golden files: `AHT_UPDATE_GOLDEN=1 pytest tests/conformance` rewrites tests/golden/.
"""
