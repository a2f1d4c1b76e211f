"""New weights without a new build: a template bitstream per architecture, patched with icebram per model.

A template is a full build whose weights, scale and offset memories hold pseudo-random words (one template per
layer shapes, ReLU flags, P, device and clock). icebram finds each memory in the placed design (.asc) by its
256-word bit slices, which the random words make unique, and rewrites them with a model's words (one icebram run
per memory, on the .asc's block RAM sections only); icepack then packs the result. Every model's bitstream is
template + patch, the first one included, so a model that builds once always patches.
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgewise.fpga.build.report import ResourceReport
from edgewise.fpga.build.synth import DEFAULT_BAUD, BuildResult, build_bitstream
from edgewise.fpga.errors import PatchError, ToolchainError
from edgewise.fpga.hdl import MEMORY_NAMES, MemoryImage, memory_images
from edgewise.fpga.hdl.layout import EBR_WORDS
from edgewise.fpga.ir import IntegerModel
from edgewise.fpga.toolchain import Toolchain

TEMPLATE_FORMAT = "edgewise.fpga-template/1"


@dataclass(frozen=True, slots=True)
class Template:
    """A placed and routed design with random memory contents, and those contents."""

    folder: Path
    architecture: tuple[tuple[int, int, bool], ...]
    parallelism: int
    device: str
    clock_hz: float
    baud: int
    images: dict[str, MemoryImage]
    report: ResourceReport
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def asc(self) -> Path:
        return self.folder / "template.asc"

    @property
    def rtl(self) -> Path:
        return self.folder / "top.v"

    def matches(self, model: IntegerModel, parallelism: int) -> bool:
        """Whether `model` at `parallelism` can be patched into this template."""
        return model.architecture == self.architecture and parallelism == self.parallelism

    def save(self) -> None:
        """Write the images and `template.json` (last) beside the .asc and RTL already in `folder`."""
        for name, image in self.images.items():
            (self.folder / f"{name}.template.hex").write_text(image.to_hex())
        description = {
            "format": TEMPLATE_FORMAT,
            "architecture": [list(layer) for layer in self.architecture],
            "parallelism": self.parallelism,
            "device": self.device,
            "clock_hz": self.clock_hz,
            "baud": self.baud,
            "widths": {name: image.width for name, image in self.images.items()},
            "report": self.report.to_json(),
            "timings": self.timings,
        }
        (self.folder / "template.json").write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Template:
        try:
            raw: dict[str, Any] = json.loads((folder / "template.json").read_text())
            if raw.get("format") != TEMPLATE_FORMAT:
                raise PatchError(f"{folder} holds a template of another format: {raw.get('format')!r}")
            images = {
                name: MemoryImage.from_hex((folder / f"{name}.template.hex").read_text(), width=int(width))
                for name, width in raw["widths"].items()
            }
            return cls(
                folder=folder,
                architecture=tuple((int(o), int(i), bool(r)) for o, i, r in raw["architecture"]),
                parallelism=int(raw["parallelism"]),
                device=str(raw["device"]),
                clock_hz=float(raw["clock_hz"]),
                baud=int(raw["baud"]),
                images=images,
                report=ResourceReport.from_json(raw["report"]),
                timings={str(k): float(v) for k, v in raw.get("timings", {}).items()},
            )
        except (OSError, KeyError, ValueError) as exc:
            raise PatchError(f"{folder} does not hold a usable bitstream template: {exc}") from exc


def build_template(
    model: IntegerModel,
    *,
    parallelism: int,
    toolchain: Toolchain,
    workdir: Path,
    folder: Path | None = None,
    device: str = "up5k",
    clock_hz: float = 48e6,
    baud: int = DEFAULT_BAUD,
) -> Template:
    """A full build for `model`'s architecture (its numbers are not used), kept in `folder` (default `workdir`).

    The build's own files stay in `workdir / "build"`; the template is the .asc, the RTL, the random memory
    images and `template.json`, written last so that a folder with it holds a complete template.
    """
    destination = folder or workdir
    build: BuildResult = build_bitstream(
        model,
        parallelism=parallelism,
        toolchain=toolchain,
        workdir=workdir / "build",
        device=device,
        clock_hz=clock_hz,
        memory_init="random",
        baud=baud,
    )
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(build.asc, destination / "template.asc")
    shutil.copyfile(build.rtl, destination / "top.v")
    shutil.copyfile(build.bitstream, destination / "template.bin")
    template = Template(
        folder=destination,
        architecture=build.architecture,
        parallelism=parallelism,
        device=device,
        clock_hz=build.clock_hz,
        baud=build.baud,
        images=build.images,
        report=build.report,
        timings=build.timings,
    )
    template.save()
    return template


def load_or_build_template(
    model: IntegerModel,
    *,
    parallelism: int,
    toolchain: Toolchain,
    folder: Path,
    workdir: Path,
    device: str = "up5k",
    clock_hz: float = 48e6,
    baud: int = DEFAULT_BAUD,
) -> tuple[Template, bool]:
    """The template in `folder` when it matches the model's architecture and the build settings, else a new
    one built through `workdir` into `folder`; the flag says whether an existing template was reused."""
    if (folder / "template.json").exists():
        existing = Template.load(folder)
        same = (existing.device, existing.baud, existing.parallelism) == (device, baud, parallelism)
        if same and existing.architecture == model.architecture and abs(existing.clock_hz - clock_hz) < 0.01 * clock_hz:
            return existing, True
    template = build_template(
        model,
        parallelism=parallelism,
        toolchain=toolchain,
        workdir=workdir,
        folder=folder,
        device=device,
        clock_hz=clock_hz,
        baud=baud,
    )
    return template, False


def patch_bitstream(
    template: Template, model: IntegerModel, toolchain: Toolchain, workdir: Path, *, parallelism: int | None = None
) -> Path:
    """`model`'s bitstream (.bin in `workdir`): the template with the model's memory contents, then icepack."""
    if model.architecture != template.architecture or parallelism not in (None, template.parallelism):
        raise PatchError(
            f"the template is for architecture {template.architecture} with P={template.parallelism}; the model "
            f"has {model.architecture}" + (f" with P={parallelism}" if parallelism is not None else "")
        )
    workdir.mkdir(parents=True, exist_ok=True)
    images = memory_images(model, template.parallelism)
    design = template.asc.read_text()
    # icebram needs only the block RAM sections (tile configuration for the read mode, and the data), not the
    # ~40,000 lines of the whole design that it would copy through a line at a time; and the memories sit in
    # different block RAMs, so the three icebram runs go side by side and their changed sections are merged
    rams = _ram_sections(design)

    def run_icebram(name: str) -> str:
        source, target = workdir / f"{name}.template.hex", workdir / f"{name}.hex"
        source.write_text(template.images[name].to_hex())
        target.write_text(images[name].to_hex())
        try:
            done = toolchain.run("icebram", [source.name, target.name], cwd=workdir, stdin=rams.encode())
        except ToolchainError as exc:
            raise PatchError(
                f"icebram could not find the {name} memory of the template in its bitstream: {exc.output.strip()}"
            ) from exc
        return str(done.stdout.decode())

    with ThreadPoolExecutor(max_workers=len(MEMORY_NAMES)) as pool:
        outputs = list(pool.map(run_icebram, MEMORY_NAMES))
    original = {section[0]: section for section in _sections(rams)}
    changed: dict[str, list[str]] = {}
    for name, output in zip(MEMORY_NAMES, outputs, strict=True):
        for section in _sections(output):
            if section[0].startswith(".ram_data ") and section != original.get(section[0]):
                if section[0] in changed:
                    raise PatchError(f"two memories claim the same block RAM ({section[0]}, {name})")
                changed[section[0]] = section
    patched = workdir / "patched.asc"
    patched.write_text(_replace_ram_data(design, changed))
    bitstream = workdir / "bitstream.bin"
    toolchain.run("icepack", [patched.name, bitstream.name], cwd=workdir)
    return bitstream


def _sections(text: str) -> list[list[str]]:
    """An .asc as its sections: a `.keyword ...` line and the lines up to the next one."""
    sections: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith(".") or not sections:
            sections.append([line])
        else:
            sections[-1].append(line)
    return sections


def _ram_sections(text: str) -> str:
    kept = [section for section in _sections(text) if section[0].startswith((".ramt_tile ", ".ram_data "))]
    return "".join(line + "\n" for section in kept for line in section)


def _replace_ram_data(design: str, patched: dict[str, list[str]]) -> str:
    sections = [patched.get(section[0], section) for section in _sections(design)]
    return "".join(line + "\n" for section in sections for line in section)


def timed_patch(template: Template, model: IntegerModel, toolchain: Toolchain, workdir: Path) -> tuple[Path, float]:
    """patch_bitstream and its wall time in seconds (what the benchmark reports)."""
    started = time.perf_counter()
    bitstream = patch_bitstream(template, model, toolchain, workdir)
    return bitstream, time.perf_counter() - started


# -- reading memories back out of a bitstream ------------------------------------------------------------------


def ebr_slices(asc_text: str) -> list[int]:
    """Every 256-word bit slice of every initialized block RAM in an .asc, as icebram reads them."""
    lines = asc_text.splitlines()
    data_lines: dict[tuple[int, int], int] = {}
    config_lines: dict[tuple[int, int], int] = {}
    for number, line in enumerate(lines):
        if line.startswith(".ram_data "):
            x, y = (int(part) for part in line.split()[1:3])
            data_lines[(x, y)] = number
        elif line.startswith(".ramt_tile "):
            x, y = (int(part) for part in line.split()[1:3])
            config_lines[(x, y - 1)] = number
    slices = []
    orders = {0: (0,), 1: (0, 1), 2: (0, 2, 1, 3), 3: (0, 4, 2, 6, 1, 5, 3, 7)}
    for position, start in data_lines.items():
        bits = 0
        for row in range(16):
            bits |= int(lines[start + 1 + row], 16) << (256 * row)
        config = config_lines.get(position)
        mode = 0
        if config is not None:
            mode = (2 if lines[config + 3][7] == "1" else 0) | (1 if lines[config + 4][7] == "1" else 0)
        order = orders[mode]
        per_word = len(order)
        for block in range(0, 4096, 4096 // per_word):
            for bit_base in range(0, 16, per_word):
                value = 0
                for outer in range(256 // per_word):
                    for inner in range(per_word):
                        if bits >> (block + bit_base + outer * 16 + order[inner]) & 1:
                            value |= 1 << (outer * per_word + inner)
                slices.append(value)
    return slices


def image_slices(image: MemoryImage) -> list[int]:
    """The 256-word bit slices of a memory image, in icebram's order."""
    slices = []
    for bit in range(image.width):
        for start in range(0, image.depth, EBR_WORDS):
            value = 0
            for offset, word in enumerate(image.words[start : start + EBR_WORDS]):
                value |= (word >> bit & 1) << offset
            slices.append(value)
    return slices


def count_instances(asc_text: str, image: MemoryImage) -> int:
    """How many complete copies of `image` the bitstream holds (0 when any slice is missing)."""
    present: dict[int, int] = {}
    for value in ebr_slices(asc_text):
        present[value] = present.get(value, 0) + 1
    return min(present.get(value, 0) for value in image_slices(image))
