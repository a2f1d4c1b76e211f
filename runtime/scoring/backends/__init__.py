"""Backends that run a model version; `load_backend` picks one from the model file and config.json."""

from __future__ import annotations

from pathlib import Path

from edgewise.runtime.scoring.backends.base import Backend
from edgewise.runtime.scoring.errors import ModelLoadError
from edgewise.runtime.scoring.repository import ModelConfig, is_script


def load_backend(path: Path, config: ModelConfig, *, intra_op_threads: int = 0) -> Backend:
    if is_script(path, config):
        from edgewise.runtime.scoring.backends.script import ScriptBackend

        if config.input_names or config.output_names:
            raise ModelLoadError(
                f"{path}: config.json renames inputs or outputs, which only applies to ONNX graphs; a scoring "
                "script names its tensors itself in INPUTS and OUTPUTS"
            )
        return ScriptBackend(path, model_name=config.name, batching=config.max_batch_size > 0)
    if path.suffix == ".onnx":
        from edgewise.runtime.scoring.backends.onnx import OnnxBackend

        return OnnxBackend(
            path,
            input_names=config.input_names,
            output_names=config.output_names,
            intra_op_threads=intra_op_threads,
        )
    raise ModelLoadError(
        f"{path}: no backend serves {path.suffix or 'extensionless'} files; use .onnx, or a scoring script "
        'with "backend": "script"'
    )


__all__ = ["Backend", "load_backend"]
