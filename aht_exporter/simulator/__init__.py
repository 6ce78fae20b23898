"""Loopback simulators of the providers' APIs, serving one deterministic `workload.Workload`.

They let the exporter run end to end (`--demo`, the e2e tests, the benchmarks) with no credentials and
no internet, and they know the ground truth (`Workload.truth`) that the exported figures must equal.
"""
