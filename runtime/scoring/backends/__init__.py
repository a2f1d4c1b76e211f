"""Backends that run a model version; `load_backend` picks one from the model file."""

from __future__ import annotations

from pathlib import Path

from edgewise.runtime.scoring.backends.base import Backend
from edgewise.runtime.scoring.errors import ModelLoadError
from edgewise.runtime.scoring.repository import ModelConfig


def load_backend(path: Path, config: ModelConfig, *, intra_op_threads: int = 0) -> Backend:
    if path.suffix == ".onnx":
        from edgewise.runtime.scoring.backends.onnx import OnnxBackend

        return OnnxBackend(
            path,
            input_names=config.input_names,
            output_names=config.output_names,
            intra_op_threads=intra_op_threads,
        )
    raise ModelLoadError(f"{path}: no backend serves {path.suffix or 'extensionless'} files; use .onnx")


__all__ = ["Backend", "load_backend"]
