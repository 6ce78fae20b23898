"""Generate the Grafana dashboards, the Grafana alert rules and the Prometheus rules from grafana/aht_mixin.

    python grafana/generate.py           # write every file that changed
    python grafana/generate.py --check   # exit 1, naming each file that differs from a fresh generation

Needs aht-exporter installed (for each provider's declared data age) and PyYAML.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder is on sys.path and the package is `aht_mixin`; the tests import it
# as `grafana.aht_mixin` from the repository root. Either way it is the same source.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from aht_mixin.build import main

if __name__ == "__main__":
    sys.exit(main())
