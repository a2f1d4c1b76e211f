"""The Triton-style model repository on disk: `DIR/{model}/{version}/model.onnx` plus `config.json`.

A version folder may hold a scoring script, `score.py`, instead of (or around) an ONNX model: it is served by
the script backend when config.json says `"backend": "script"`, or when the folder has no model file but has
`score.py`.

An FPGA version folder holds `fpga.json` (docs/fpga.md) and the design it names: it is served by the FPGA
backend when config.json says `"backend": "fpga"`, or when the folder has no model file but has `fpga.json`.

config.json (every key optional):

    {
      "max_batch_size": 64,                       # 0 disables batching
      "dynamic_batching": {"max_queue_delay_microseconds": 100},
      "version_policy": {"latest": {"num_versions": 1}} | {"all": {}} | {"specific": {"versions": [1, 3]}},
      "input":  [{"name": "pixels", "onnx_name": "input"}],      # serve a graph tensor under another name
      "output": [{"name": "scores", "onnx_name": "probabilities"}],
      "default_model_filename": "model.onnx",   # "score.py" for "script", "fpga.json" for "fpga"
      "backend": "onnxruntime" | "script" | "fpga",  # default: by the files in each version folder
      "warmup": true
    }
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgewise.runtime.scoring.errors import ModelLoadError

CONFIG_FILE = "config.json"
SCRIPT_FILE = "score.py"
FPGA_FILE = "fpga.json"
BACKENDS = ("onnxruntime", "script", "fpga")
_DEFAULT_FILES = {"script": SCRIPT_FILE, "fpga": FPGA_FILE}


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    kind: str = "latest"  # latest | all | specific
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        ordered = sorted(available)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[-self.num_versions :] if self.num_versions > 0 else []


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    max_batch_size: int = 0
    max_queue_delay_us: int = 0
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    input_names: dict[str, str] = field(default_factory=dict)  # graph name -> served name
    output_names: dict[str, str] = field(default_factory=dict)
    model_filename: str = "model.onnx"
    warmup: bool = True
    backend: str = ""  # "" picks by the files in each version folder; see `model_file`


def _policy(raw: Any, where: Path) -> VersionPolicy:
    if raw is None:
        return VersionPolicy()
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ModelLoadError(f"{where}: version_policy must have exactly one of latest, all, specific")
    kind, body = next(iter(raw.items()))
    body = body or {}
    if kind == "latest":
        return VersionPolicy("latest", num_versions=int(body.get("num_versions", 1)))
    if kind == "all":
        return VersionPolicy("all")
    if kind == "specific":
        return VersionPolicy("specific", versions=tuple(int(v) for v in body.get("versions", [])))
    raise ModelLoadError(f"{where}: unknown version_policy {kind!r}; use latest, all or specific")


def _renames(raw: Any, key: str, where: Path) -> dict[str, str]:
    names: dict[str, str] = {}
    for entry in raw or []:
        if not isinstance(entry, dict) or "name" not in entry:
            raise ModelLoadError(f"{where}: each {key} entry needs a name")
        names[str(entry.get("onnx_name", entry["name"]))] = str(entry["name"])
    return names


def read_config(model_dir: Path) -> ModelConfig:
    """Parse a model's config.json; a missing file means all defaults."""
    path = model_dir / CONFIG_FILE
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ModelLoadError(f"{path}: expected a JSON object")
    batching = raw.get("dynamic_batching") or {}
    max_batch = int(raw.get("max_batch_size", 0))
    if max_batch < 0:
        raise ModelLoadError(f"{path}: max_batch_size must be 0 or more")
    backend = str(raw.get("backend", ""))
    if backend and backend not in BACKENDS:
        raise ModelLoadError(f"{path}: unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    default_file = _DEFAULT_FILES.get(backend, "model.onnx")
    return ModelConfig(
        name=model_dir.name,
        max_batch_size=max_batch,
        max_queue_delay_us=int(batching.get("max_queue_delay_microseconds", 0)),
        version_policy=_policy(raw.get("version_policy"), path),
        input_names=_renames(raw.get("input"), "input", path),
        output_names=_renames(raw.get("output"), "output", path),
        model_filename=str(raw.get("default_model_filename", default_file)),
        warmup=bool(raw.get("warmup", True)),
        backend=backend,
    )


@dataclass(frozen=True, slots=True)
class VersionOnDisk:
    version: int
    path: Path
    signature: tuple[int, int]  # (mtime_ns, size) of the model file: a change means reload


def model_file(version_dir: Path, config: ModelConfig) -> Path | None:
    """The file a version is served from: the configured model file, else `score.py` or `fpga.json` unless a
    backend is set."""
    configured = version_dir / config.model_filename
    if configured.exists():
        return configured
    if not config.backend:
        for name in (SCRIPT_FILE, FPGA_FILE):
            if (version_dir / name).is_file():
                return version_dir / name
    return None


def is_script(path: Path, config: ModelConfig) -> bool:
    """Whether the script backend serves this model file."""
    return config.backend == "script" or (not config.backend and path.suffix == ".py")


def is_fpga(path: Path, config: ModelConfig) -> bool:
    """Whether the FPGA backend serves this model file."""
    return config.backend == "fpga" or (not config.backend and path.name == FPGA_FILE)


def _folder_signature(folder: Path) -> tuple[int, int]:
    """Newest mtime and total size of a version's files, for scripts and FPGA designs that read their neighbours.

    Byte-code caches and hidden files are left out, so that importing a helper module next to the script
    does not look like a change.
    """
    newest, total = 0, 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
        for filename in filenames:
            if filename.startswith("."):
                continue
            try:
                stat = os.stat(os.path.join(dirpath, filename))
            except FileNotFoundError:  # removed while we looked: the next scan sees the folder as it is then
                continue
            newest = max(newest, stat.st_mtime_ns)
            total += stat.st_size
    return newest, total


def versions_on_disk(model_dir: Path, config: ModelConfig) -> list[VersionOnDisk]:
    """Numeric version folders that hold the model file (or a scoring script); anything else is ignored."""
    found = []
    for entry in model_dir.iterdir():
        if not entry.is_dir() or not entry.name.isdigit():
            continue
        try:
            path = model_file(entry, config)
            if path is None:
                continue
            if is_script(path, config) or is_fpga(path, config):  # both read files beside the model file
                signature = _folder_signature(entry)
            else:
                stat = path.stat()
                signature = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            continue
        found.append(VersionOnDisk(int(entry.name), path, signature))
    return sorted(found, key=lambda v: v.version)


def model_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
