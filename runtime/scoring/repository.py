"""The Triton-style model repository on disk: `DIR/{model}/{version}/model.onnx` plus `config.json`.

config.json (every key optional):

    {
      "max_batch_size": 64,                       # 0 disables batching
      "dynamic_batching": {"max_queue_delay_microseconds": 100},
      "version_policy": {"latest": {"num_versions": 1}} | {"all": {}} | {"specific": {"versions": [1, 3]}},
      "input":  [{"name": "pixels", "onnx_name": "input"}],      # serve a graph tensor under another name
      "output": [{"name": "scores", "onnx_name": "probabilities"}],
      "default_model_filename": "model.onnx",
      "warmup": true
    }
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgewise.runtime.scoring.errors import ModelLoadError

CONFIG_FILE = "config.json"


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
    return ModelConfig(
        name=model_dir.name,
        max_batch_size=max_batch,
        max_queue_delay_us=int(batching.get("max_queue_delay_microseconds", 0)),
        version_policy=_policy(raw.get("version_policy"), path),
        input_names=_renames(raw.get("input"), "input", path),
        output_names=_renames(raw.get("output"), "output", path),
        model_filename=str(raw.get("default_model_filename", "model.onnx")),
        warmup=bool(raw.get("warmup", True)),
    )


@dataclass(frozen=True, slots=True)
class VersionOnDisk:
    version: int
    path: Path
    signature: tuple[int, int]  # (mtime_ns, size) of the model file: a change means reload


def versions_on_disk(model_dir: Path, config: ModelConfig) -> list[VersionOnDisk]:
    """Numeric version folders that hold the model file; anything else is ignored."""
    found = []
    for entry in model_dir.iterdir():
        if not entry.is_dir() or not entry.name.isdigit():
            continue
        model_file = entry / config.model_filename
        try:
            stat = model_file.stat()
        except OSError:
            continue
        found.append(VersionOnDisk(int(entry.name), model_file, (stat.st_mtime_ns, stat.st_size)))
    return sorted(found, key=lambda v: v.version)


def model_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
