"""One real template build (16-32-5, P=8, UP5K at 48 MHz) and icebram weight patches on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgewise.fpga.build import (
    Template,
    build_template,
    count_instances,
    load_or_build_template,
    patch_bitstream,
    write_rtl,
)
from edgewise.fpga.build.patch import ebr_slices
from edgewise.fpga.errors import PatchError
from edgewise.fpga.hdl import MEMORY_NAMES, memory_images
from edgewise.fpga.toolchain import Toolchain

from tests.fpga.hw_models import random_integer_model

SIZES = (16, 32, 5)
PREAMBLE = b"\x7e\xaa\x99\x7e"


@pytest.fixture(scope="module")
def template(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory) -> Template:
    folder = tmp_path_factory.mktemp("template")
    return build_template(random_integer_model(SIZES, seed=1), parallelism=8, toolchain=toolchain, workdir=folder)


def test_template_build_is_a_real_bitstream(template: Template) -> None:
    bitstream = template.folder / "build" / "top.bin"
    data = bitstream.read_bytes()
    assert PREAMBLE in data[:256]
    assert len(data) > 100_000  # a UP5K image is about 104 kB
    assert "module top" in template.rtl.read_text()
    report = template.report
    assert report.fits
    assert report.resources["ICESTORM_DSP"] == (8, 8)  # the MAC lanes are SB_MAC16 blocks
    assert report.resources["ICESTORM_PLL"] == (1, 1)
    assert 0 < report.resources["ICESTORM_RAM"][0] <= 30
    assert report.target_mhz == pytest.approx(48.0, rel=0.01)
    assert report.fmax_mhz > 0
    assert set(template.timings) == {"elaborate", "yosys", "nextpnr-ice40", "icepack"}
    # the template holds its random contents, once each
    asc = template.asc.read_text()
    for name in MEMORY_NAMES:
        assert count_instances(asc, template.images[name]) == 1, name


def test_template_survives_save_and_load(template: Template) -> None:
    loaded = Template.load(template.folder)
    assert loaded.images == template.images
    assert loaded.architecture == template.architecture and loaded.parallelism == 8
    assert loaded.report == template.report


def test_two_models_patch_into_one_template(template: Template, toolchain: Toolchain, tmp_path: Path) -> None:
    first, second = random_integer_model(SIZES, seed=21), random_integer_model(SIZES, seed=22, last_relu=False)
    bins = [
        patch_bitstream(template, model, toolchain, tmp_path / name) for model, name in ((first, "a"), (second, "b"))
    ]
    for path in bins:
        assert path.read_bytes().startswith(b"\xff\x00") and PREAMBLE in path.read_bytes()[:256]
    ascs = [(tmp_path / name / "patched.asc").read_text() for name in ("a", "b")]
    original = template.asc.read_text()

    # everything but block RAM contents is the template's
    def logic(text: str) -> list[str]:
        lines, keep, skipping = text.splitlines(), [], False
        for line in lines:
            if line.startswith("."):
                skipping = line.startswith(".ram_data")
            if not skipping:
                keep.append(line)
        return keep

    assert logic(ascs[0]) == logic(ascs[1]) == logic(original)
    assert ascs[0] != ascs[1]

    # each bitstream holds its own model's words, and none of the template's
    for asc, model in zip(ascs, (first, second), strict=True):
        for name, image in memory_images(model, 8).items():
            assert count_instances(asc, image) == 1, name
            assert count_instances(asc, template.images[name]) == 0, name

    # and the packed .bin says the same once unpacked
    unpacked = bins[1].parent / "unpacked.asc"  # the tools see only their working folder
    toolchain.run("icepack", ["-u", bins[1].name, unpacked.name], cwd=bins[1].parent)
    text = unpacked.read_text()
    assert set(ebr_slices(ascs[1])) <= set(ebr_slices(text))  # the unpacked file lists every block RAM
    for name, image in memory_images(second, 8).items():
        assert count_instances(text, image) == 1, name
        assert count_instances(text, template.images[name]) == 0, name


def test_patch_refuses_another_architecture(template: Template, toolchain: Toolchain, tmp_path: Path) -> None:
    with pytest.raises(PatchError, match="architecture"):
        patch_bitstream(template, random_integer_model((16, 31, 5), seed=3), toolchain, tmp_path)


def test_a_matching_template_is_reused(template: Template, toolchain: Toolchain, tmp_path: Path) -> None:
    model = random_integer_model(SIZES, seed=30)
    reused, was_reused = load_or_build_template(
        model, parallelism=8, toolchain=toolchain, folder=template.folder, workdir=tmp_path
    )
    assert was_reused and reused.images == template.images
    assert not (tmp_path / "build").exists()  # no build ran


def test_rtl_with_the_models_contents(template: Template, toolchain: Toolchain, tmp_path: Path) -> None:
    model = random_integer_model(SIZES, seed=40)
    rtl = write_rtl(model, parallelism=8, toolchain=toolchain, workdir=tmp_path).read_text()
    weights = memory_images(model, 8)["weights"]
    assert "module top" in rtl
    assert f"64'h{weights.words[1]:016x}" in rtl
    assert f"64'h{template.images['weights'].words[1]:016x}" in template.rtl.read_text()
