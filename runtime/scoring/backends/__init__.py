"""Backends that run a model version; `load_backend` picks one from the model file and config.json."""

from __future__ import annotations

from pathlib import Path

from edgewise.runtime.scoring.backends.base import Backend
from edgewise.runtime.scoring.errors import ModelLoadError
from edgewise.runtime.scoring.repository import ModelConfig, is_fpga, is_script


def load_backend(
    path: Path, config: ModelConfig, *, intra_op_threads: int = 0, intra_op_spinning: bool = False
) -> Backend:
    if is_script(path, config):
        from edgewise.runtime.scoring.backends.script import ScriptBackend

        if config.input_names or config.output_names:
            raise ModelLoadError(
                f"{path}: config.json renames inputs or outputs, which only applies to ONNX graphs; a scoring "
                "script names its tensors itself in INPUTS and OUTPUTS"
            )
        return ScriptBackend(path, model_name=config.name, batching=config.max_batch_size > 0)
    if is_fpga(path, config):
        from edgewise.runtime.scoring.backends.fpga import load_fpga_backend

        if config.input_names or config.output_names:
            raise ModelLoadError(
                f"{path}: config.json renames inputs or outputs, which only applies to ONNX graphs; an FPGA "
                "model names its tensors in fpga.json"
            )
        if config.max_batch_size > 0:
            raise ModelLoadError(
                f"{path}: the FPGA design runs one input vector at a time; set max_batch_size to 0 in config.json"
            )
        return load_fpga_backend(path)
    if path.suffix == ".onnx":
        from edgewise.runtime.scoring.backends.onnx import OnnxBackend

        return OnnxBackend(
            path,
            input_names=config.input_names,
            output_names=config.output_names,
            intra_op_threads=intra_op_threads,
            intra_op_spinning=intra_op_spinning,
        )
    raise ModelLoadError(
        f"{path}: no backend serves {path.suffix or 'extensionless'} files; use .onnx, a scoring script "
        'with "backend": "script", or an FPGA descriptor with "backend": "fpga"'
    )


__all__ = ["Backend", "load_backend"]
