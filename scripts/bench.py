#!/usr/bin/env python3
"""Run statbus's benchmark: ``python scripts/bench.py [--quick] [--json PATH]``.

The code lives in ``statbus.pipeline.bench``; this script is only its front door.
"""

import sys

from statbus.pipeline.bench.main import main

if __name__ == "__main__":
    sys.exit(main())
