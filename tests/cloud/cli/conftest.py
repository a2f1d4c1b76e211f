"""Fixtures of the CLI tests: a training project on disk and runs submitted through `edgewise run submit`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cloud.cli.cli import edgewise
from tests.cloud.service import WorkspaceProcess

TRAIN_SCRIPT = """\
import pickle
import sys
from pathlib import Path

from edgewise.cloud import Run

accuracy = float(sys.argv[sys.argv.index("--accuracy") + 1])
run = Run.get_context()
for step in range(3):
    run.log("loss", 1.0 / (step + 1), step=step)
run.log("accuracy", accuracy)
Path("outputs").mkdir(exist_ok=True)
Path("outputs/model.pkl").write_bytes(pickle.dumps({"accuracy": accuracy}))
Path("outputs/notes.txt").write_text("trained\\n")
print("training done with", accuracy, flush=True)
print("a warning line", file=sys.stderr, flush=True)
run.close()
"""


@dataclass(frozen=True)
class SubmittedRun:
    id: str
    accuracy: float
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Trained:
    """Two completed runs of one experiment, submitted and waited for by the CLI."""

    experiment: str
    project: Path
    runs: tuple[SubmittedRun, SubmittedRun]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("project")
    (folder / "train.py").write_text(TRAIN_SCRIPT)
    (folder / "fail.py").write_text("import sys\nprint('about to fail', file=sys.stderr)\nsys.exit(3)\n")
    (folder / "sleep.py").write_text("import time\nprint('sleeping', flush=True)\ntime.sleep(120)\n")
    return folder


@pytest.fixture(scope="module")
def trained(workspace: WorkspaceProcess, project: Path) -> Trained:
    experiment = unique("cli-train")
    submitted = []
    for accuracy in (0.7, 0.9):
        result = edgewise(
            "run", "submit", "--experiment", experiment, "--source", str(project), "--script", "train.py",
            "--tag", f"acc={accuracy}", "--wait", "--", "--accuracy", str(accuracy),
            env=workspace.env,
        )  # fmt: skip
        run_id = result.stdout.splitlines()[0].strip()
        submitted.append(SubmittedRun(run_id, accuracy, result.stdout, result.stderr))
    return Trained(experiment, project, (submitted[0], submitted[1]))
