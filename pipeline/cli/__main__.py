"""``python -m statbus.pipeline.cli ARGS``: the ``statbus`` command, without its console script."""

import sys

from .main import main

sys.exit(main())
