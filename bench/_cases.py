"""The two benchmark models, their sample request and reference output, built once per run on disk."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from examples.models import matmul_model, mlp_model  # noqa: E402

# Dynamic batching on, as the brief asks for the edgewise repository; competitors ignore this file.
EDGEWISE_CONFIG = {"max_batch_size": 64, "dynamic_batching": {"max_queue_delay_microseconds": 0}}


@dataclass(frozen=True)
class ModelCase:
    """One served model: where its ONNX file is, its input, one sample row and the expected outputs."""

    name: str
    onnx_path: Path
    input_name: str
    sample: np.ndarray
    expected: dict[str, np.ndarray] = field(repr=False)

    @property
    def output_names(self) -> list[str]:
        return list(self.expected)


def session(path: Path, threads: int) -> ort.InferenceSession:
    """An onnxruntime CPU session with the same thread settings every server in the benchmark gets."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _case(name: str, path: Path, features: int, threads: int) -> ModelCase:
    rng = np.random.default_rng(42)
    sample = rng.standard_normal((1, features)).astype(np.float32)
    sess = session(path, threads)
    input_name = sess.get_inputs()[0].name
    outputs = [o.name for o in sess.get_outputs()]
    results = sess.run(outputs, {input_name: sample})
    return ModelCase(name, path, input_name, sample, dict(zip(outputs, results, strict=True)))


def build_cases(work: Path, threads: int) -> list[ModelCase]:
    """Write both models under `work/onnx` and compute their reference outputs in-process."""
    onnx_dir = work / "onnx"
    return [
        _case("matmul", matmul_model(onnx_dir / "matmul.onnx"), 16, threads),
        _case("mlp", mlp_model(onnx_dir / "mlp.onnx"), 784, threads),
    ]


def triton_repository(cases: list[ModelCase], root: Path) -> Path:
    """Lay out `root/{model}/1/model.onnx` plus `config.json`, the layout edgewise-score reads."""
    for case in cases:
        version = root / case.name / "1"
        version.mkdir(parents=True, exist_ok=True)
        target = version / "model.onnx"
        target.write_bytes(case.onnx_path.read_bytes())
        (root / case.name / "config.json").write_text(json.dumps(EDGEWISE_CONFIG))
    return root
