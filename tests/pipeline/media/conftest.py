"""The media tests use the SummaryWriter tests' helpers (``summary_writer_helpers``), one folder up."""

from __future__ import annotations

import os
import sys

PIPELINE_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PIPELINE_TESTS not in sys.path:
    sys.path.insert(0, PIPELINE_TESTS)
