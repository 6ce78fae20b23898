import sys

from aht_exporter.cli import main

sys.exit(main())
