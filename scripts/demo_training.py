#!/usr/bin/env python3
"""Simulated ML-Agents training run recording through statbus (see statbus.pipeline.simulation)."""

import sys

from statbus.pipeline.simulation import main

if __name__ == "__main__":
    sys.exit(main())
