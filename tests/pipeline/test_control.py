"""The control client (pipeline/control.py)."""

from __future__ import annotations

import pytest

from statbus.pipeline.control import ControlError, control_request


def test_control_request_without_a_collector_times_out(tmp_path):
    with pytest.raises(ControlError):
        control_request("ipc://" + str(tmp_path / "nobody"), {"op": "ping"}, timeout=0.2)

