"""FPGA image builds: a registered ONNX model compiled for an FPGA, packaged as an OCI image.

The image is an ordinary runnable OCI image (its entrypoint is `edgewise-score`, whose FPGA backend serves the
design) marked with the OCI 1.1 `artifactType` of FPGA images, so registries and the agent can tell it apart.
Its model version folder holds what docs/fpga.md lists: the bitstream, the RTL, the integer model, the
quantization parameters, the virtual FPGA's C++ source, and the build report.

The FPGA toolchain is an optional extra (`edgewise[fpga]`), imported only when such a build runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.images.layers import Source
from edgewise.cloud.store.blobs import BlobStore
from edgewise.cloud.store.records import FileEntry

ARTIFACT_TYPE = "application/vnd.edgewise.fpga.v1+json"
KIND = "fpga"
DEVICES = ("up5k",)
MAX_PARALLELISM = 8  # the UP5K has 8 SB_MAC16 blocks, one per multiply-accumulate unit
CALIBRATION_SUFFIXES = (".npz", ".npy", ".csv")
CALIBRATION_STEM = "calibration"
MODEL_CONFIG = {"backend": "fpga", "default_model_filename": "fpga.json", "max_batch_size": 0, "warmup": True}
ANNOTATION_PREFIX = "io.edgewise.fpga."

Progress = Callable[[float, str], None]


@dataclass(frozen=True, kw_only=True)
class FpgaOptions:
    """How to compile: the target device, P multiply-accumulate units, the clock, and calibration data."""

    device: str = "up5k"
    parallelism: int = 8
    clock_mhz: float = 48.0
    calibration: FileEntry | None = None  # an uploaded file; None: the model's own calibration.{npz,npy,csv}

    def check(self) -> None:
        if self.device not in DEVICES:
            raise InvalidInputError(f"unknown FPGA device {self.device!r}; supported: {', '.join(DEVICES)}")
        if not 1 <= self.parallelism <= MAX_PARALLELISM:
            raise InvalidInputError(f"--parallelism must be 1 to {MAX_PARALLELISM} on the {self.device}")
        if not 1.0 <= self.clock_mhz <= 200.0:
            raise InvalidInputError(f"clock {self.clock_mhz} MHz is out of range (1 to 200 MHz)")
        if self.calibration is not None and PurePosixPath(self.calibration.path).suffix not in CALIBRATION_SUFFIXES:
            raise InvalidInputError(
                f"calibration file {self.calibration.path!r}: use one of {', '.join(CALIBRATION_SUFFIXES)}"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "parallelism": self.parallelism,
            "clock_mhz": self.clock_mhz,
            "calibration": self.calibration.path if self.calibration else None,
        }


def onnx_file(model_files: Sequence[FileEntry], model_ref: str) -> FileEntry:
    found = [entry for entry in model_files if entry.path.endswith(".onnx")]
    if len(found) != 1:
        raise InvalidInputError(
            f"model {model_ref} has {len(found)} ONNX files; an FPGA image is compiled from exactly one"
        )
    return found[0]


def calibration_file(model_files: Sequence[FileEntry], options: FpgaOptions, model_ref: str) -> FileEntry:
    if options.calibration is not None:
        return options.calibration
    for entry in model_files:
        path = PurePosixPath(entry.path)
        if path.stem == CALIBRATION_STEM and path.suffix in CALIBRATION_SUFFIXES:
            return entry
    raise InvalidInputError(
        f"an FPGA build quantizes with calibration data: give --calibration FILE (.npz with x [and y], .npy or "
        f".csv), or register model {model_ref} with a calibration.npz beside its ONNX file"
    )


@dataclass(frozen=True, kw_only=True)
class FpgaBuild:
    files: dict[str, Source]  # the model version folder, relative path -> file
    details: dict[str, Any]  # the build report, recorded with the image
    annotations: dict[str, str]


def compile_fpga(
    *,
    blobs: BlobStore,
    model_files: Sequence[FileEntry],
    model_ref: str,
    model_name: str,
    options: FpgaOptions,
    data_dir: Path,
    scratch: Path,
    progress: Progress,
) -> FpgaBuild:
    """Compile, verify and build the model into `scratch`; every FPGA flow error becomes an InvalidInputError."""
    try:
        from edgewise.fpga.compiler import CompileOptions, compile_model
        from edgewise.fpga.errors import FpgaError
        from edgewise.fpga.toolchain import Toolchain, default_cache_dir
    except ImportError as exc:
        raise InvalidInputError(
            f"this workspace cannot build FPGA images: the FPGA toolchain is not installed ({exc}); "
            "install edgewise[fpga]"
        ) from None
    onnx = onnx_file(model_files, model_ref)
    calibration = calibration_file(model_files, options, model_ref)
    calibration_path = scratch / "calibration" / PurePosixPath(calibration.path).name
    calibration_path.parent.mkdir(parents=True, exist_ok=True)
    calibration_path.symlink_to(blobs.path(calibration.digest))
    out = scratch / "version"
    try:
        compiled = compile_model(
            blobs.path(onnx.digest).read_bytes(),
            CompileOptions(
                model_name=model_name,
                device=options.device,
                parallelism=options.parallelism,
                clock_hz=options.clock_mhz * 1e6,
            ),
            calibration=calibration_path,
            # the YoWASP caches live in the data directory, unless EDGEWISE_FPGA_CACHE names a shared one
            toolchain=Toolchain(default_cache_dir(data_dir / "fpga" / "toolchain")),
            out_dir=out,
            workdir=scratch / "work",
            templates=data_dir / "fpga" / "templates",
            progress=progress,
        )
    except FpgaError as exc:
        raise InvalidInputError(f"FPGA build of {model_ref} failed: {exc}") from None
    files: dict[str, Source] = {
        path.relative_to(out).as_posix(): path for path in sorted(out.rglob("*")) if path.is_file()
    }
    details = dict(compiled.details)
    details["options"] = options.to_json()
    summary = {
        "device": options.device,
        "parallelism": str(options.parallelism),
        "cycles": str(details.get("cycles", "")),
        "fmax-mhz": str(details.get("fmax_mhz", "")),
        "build": str(details.get("build", "")),
    }
    annotations = {ANNOTATION_PREFIX + key: value for key, value in summary.items() if value}
    return FpgaBuild(files=files, details=details, annotations=annotations)
