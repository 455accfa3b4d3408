"""``python -m statbus.pipeline.cli ARGS``: the ``statbus`` command, without its console script."""

import sys

from .main import main

if __name__ == "__main__":  # importable, like every module (tests/test_packaging.py imports them all)
    sys.exit(main())
