"""Build flow pieces, and a model too big for the UP5K failing with nextpnr's numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgewise.fpga.build import PllSettings, build_bitstream
from edgewise.fpga.errors import DesignTooLargeError, ToolchainError
from edgewise.fpga.hdl import Layout
from edgewise.fpga.toolchain import Toolchain

from tests.fpga.hw_models import random_integer_model


def test_pll_settings() -> None:
    settings = PllSettings.closest(48e6)
    assert (settings.divr, settings.divf, settings.divq, settings.filter_range) == (0, 63, 4, 1)
    assert settings.frequency == 48e6
    assert abs(PllSettings.closest(30e6).frequency - 30e6) < 0.3e6
    with pytest.raises(ToolchainError, match="PLL"):
        PllSettings.closest(5e6)


def test_unknown_device(toolchain: Toolchain, tmp_path: Path) -> None:
    with pytest.raises(ToolchainError, match="hx8k"):
        build_bitstream(random_integer_model((4, 2), seed=1), parallelism=2, toolchain=toolchain, workdir=tmp_path,
                        device="hx8k")  # fmt: skip


def test_model_too_big_for_the_block_rams(toolchain: Toolchain, tmp_path: Path) -> None:
    # 128*130 + 130*2 int8 weights at P=1: 17,152 words of the weight memory, 34 block RAMs of the 30
    model = random_integer_model((128, 130, 2), seed=5)
    assert Layout.of(model.architecture, 1).weight_depth * 8 > 30 * 4096
    with pytest.raises(DesignTooLargeError) as caught:
        build_bitstream(model, parallelism=1, toolchain=toolchain, workdir=tmp_path, memory_init="random")
    used, available = caught.value.resources["ICESTORM_RAM"]
    assert available == 30 and used > 30
    assert f"ICESTORM_RAM: {used} used, 30 available" in str(caught.value)
    assert "ICESTORM_LC" in caught.value.resources
