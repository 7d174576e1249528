"""``python3 -m study run|report ...``: the same commands as ``python3 study.py``."""

import sys

from study.cli import main

sys.exit(main())
