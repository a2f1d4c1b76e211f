"""Fixtures of the FPGA tests: one warm YoWASP cache for the whole session (its first run compiles ~220 MB)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from edgewise.fpga.toolchain import CACHE_ENV, Toolchain


@pytest.fixture(scope="session")
def toolchain() -> Toolchain:
    cache = os.environ.get(CACHE_ENV) or f"/tmp/edgewise-fpga-cache-{os.getuid()}"
    return Toolchain(Path(cache))
