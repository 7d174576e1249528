#!/usr/bin/env python3
"""``python3 study.py run|report ...``: a grid of training runs and a report that compares them.

The code is the ``study/`` package beside this file (``python3 -m study`` is the same command); run
as a script, this file's folder comes first on ``sys.path`` and ``import study`` finds the package,
which Python prefers to a module of the same name.
"""

import sys

from study.cli import main

if __name__ == "__main__":
    sys.exit(main())
