"""What both sides of the tracking benchmark share: workload sizes, a local-only environment, a model."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
_PROXIES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@dataclass(frozen=True, kw_only=True)
class Workloads:
    """Sizes of the four workloads; the same values go to both systems' workload scripts."""

    points: int  # metric points logged one call at a time
    batch_points: int  # metric points logged in batches of 1,000
    versions: int  # model versions registered from one run (every other one tagged stage=prod)
    searches: int  # repeats of the tag search
    timeout: float  # seconds one system's workload script may take

    def argv(self) -> list[str]:
        return [
            "--points",
            str(self.points),
            "--batch-points",
            str(self.batch_points),
            "--versions",
            str(self.versions),
            "--searches",
            str(self.searches),
        ]


def local_only_env(extra: dict[str, str]) -> dict[str, str]:
    """The current environment without proxies, so every request stays on 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if k not in _PROXIES}
    env.update({"no_proxy": "*", "NO_PROXY": "*", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def model_file(work: Path) -> Path:
    """A small real ONNX model (16x16 MatMul), the file both registries register."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from examples.models import matmul_model

    return matmul_model(work / "model.onnx")
