"""``python -m berunda``: Berunda's command line (no QGIS needed).  Run it from the folder
that holds the plugin folder (e.g. QGIS's python/plugins, or where the packaged zip was
unzipped), or with that folder on PYTHONPATH."""
import sys

from .cli.main import main

sys.exit(main())
