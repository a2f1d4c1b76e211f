"""`edgewise model ...` against a real workspace service, through the real console script."""

from __future__ import annotations

import pickle
from pathlib import Path

from tests.cloud.cli.cli import edgewise, edgewise_json
from tests.cloud.cli.conftest import Trained, unique
from tests.cloud.service import WorkspaceProcess


def test_model_registry_round_trip(workspace: WorkspaceProcess, trained: Trained, tmp_path: Path) -> None:
    env = workspace.env
    name = unique("cli-model")
    run = trained.runs[1]

    first = edgewise(
        "model", "register", "--name", name, "--run", run.id, "--path", "outputs/model.pkl",
        "--tag", "stage=dev", "--description", "from a run", env=env,
    )  # fmt: skip
    assert first.stdout.strip() == f"registered {name}:1"
    local = tmp_path / "local.pkl"
    local.write_bytes(pickle.dumps({"local": True}))
    second = edgewise_json(
        "model", "register", "--name", name, "--file", str(local), "--tag", "stage=prod", "--tag", "team=vision",
        "--property", "threshold=0.5", env=env,
    )  # fmt: skip
    assert second["version"] == 2 and second["properties"] == {"threshold": "0.5"}

    prod = edgewise_json("model", "list", "--name", name, "--tag", "stage=prod", env=env)
    assert [m["version"] for m in prod] == [2]
    staged = edgewise_json("model", "list", "--name", name, "--tag", "stage", env=env)
    assert [m["version"] for m in staged] == [2, 1]
    assert name in edgewise("model", "list", "--tag", "team=vision", env=env).stdout

    latest = edgewise_json("model", "show", name, env=env)
    assert latest["version"] == 2
    one = edgewise_json("model", "show", f"{name}:1", env=env)
    assert one["run_id"] == run.id and one["experiment"] == trained.experiment and one["format"] == "pickle"
    shown = edgewise("model", "show", f"{name}:1", env=env).stdout
    assert "from a run" in shown and "stage=dev" in shown and "model.pkl" in shown

    edgewise("model", "download", f"{name}:1", "--to", str(tmp_path / "v1"), env=env)
    (downloaded,) = [p for p in (tmp_path / "v1").rglob("*") if p.is_file()]
    assert pickle.loads(downloaded.read_bytes()) == {"accuracy": 0.9}

    tagged = edgewise_json("model", "tag", f"{name}:1", "--set", "owner=ana", "--remove", "stage", env=env)
    assert tagged["tags"] == {"owner": "ana"}

    refused = edgewise("model", "delete", f"{name}:1", env=env, stdin="n\n", expect=1)
    assert "Aborted" in refused.stdout + refused.stderr
    assert edgewise_json("model", "show", f"{name}:1", env=env)["version"] == 1
    assert edgewise("model", "delete", f"{name}:1", "--yes", env=env).stdout.strip() == f"deleted {name}:1"
    gone = edgewise("model", "show", f"{name}:1", env=env, expect=1)
    assert gone.stderr.startswith("error: ")
    assert [m["version"] for m in edgewise_json("model", "list", "--name", name, env=env)] == [2]


def test_register_needs_a_source(workspace: WorkspaceProcess, tmp_path: Path) -> None:
    result = edgewise("model", "register", "--name", unique("m"), env=workspace.env, expect=2)
    assert "--file" in result.stderr
