"""Shared fixtures.  Keep each fixture small; other test files may add theirs here."""

from __future__ import annotations

import pytest

from statbus.plugins import RunOptions


@pytest.fixture
def run_options(tmp_path) -> RunOptions:
    """Run options of a fresh run whose results directory is ``tmp_path``."""
    return RunOptions.create("run", results_dir=str(tmp_path))
