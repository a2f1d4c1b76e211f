"""The client and the SDK against a real `edgewise up` (the `workspace` fixture of tests/cloud/conftest.py)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from edgewise.cloud.client import Client
from edgewise.cloud.errors import AuthenticationError, InvalidInputError, NotFoundError
from edgewise.cloud.store.records import MetricKind, MetricPoint, RunSpec, RunStatus

from tests.cloud.service import WorkspaceProcess
from tests.support import wait_until

TRAIN = """
import sys
from pathlib import Path
from edgewise.cloud import Run

run = Run.get_context()
print("run", run.id, run.experiment, flush=True)
for i in range(10_000):
    run.log("loss", 1.0 / (i + 1))
run.log_row("summary", best=0.5)
Path("result.txt").write_text("ok")
run.upload_file("results/result.txt", "result.txt")
run.set_tags({"stage": "done"})
with run.child_run("fold-1") as child:
    child.log("acc", 0.75)
if "--fail" in sys.argv:
    raise SystemExit("asked to fail")
"""

WAIT_FOR_FILE = """
import sys, time
from pathlib import Path

while not Path(sys.argv[1]).exists():
    time.sleep(0.05)
"""


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _submit(client: Client, tmp_path: Path, source: str, *args: str) -> str:
    folder = tmp_path / _unique("src")
    folder.mkdir()
    (folder / "train.py").write_text(textwrap.dedent(source))
    run = client.submit_run(
        experiment=_unique("exp"), source=folder, spec=RunSpec(script="train.py", arguments=list(args))
    )
    assert run.status in (RunStatus.QUEUED, RunStatus.PREPARING, RunStatus.RUNNING)
    return run.id


def test_health_tokens_and_not_found(workspace: WorkspaceProcess) -> None:
    with workspace.client() as client:
        assert client.health()["status"] == "ok"
        with pytest.raises(NotFoundError):
            client.get_run("no-such-run")
        with pytest.raises(NotFoundError):
            client.get_experiment(_unique("missing"))
        with pytest.raises(NotFoundError):
            client.get_model(_unique("missing"))
    with Client(url=workspace.url, token="wrong") as bad, pytest.raises(AuthenticationError):
        bad.list_experiments()


def test_blobs_upload_only_what_is_missing_and_download_verified(workspace: WorkspaceProcess, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    (tmp_path / "a.bin").write_bytes(data)
    (tmp_path / "b.txt").write_text(_unique("text"))
    progress: list[tuple[int, int]] = []
    with workspace.client() as client:
        files = {"a.bin": tmp_path / "a.bin", "sub/b.txt": tmp_path / "b.txt"}
        entries = client.upload_files(files, progress=lambda d, t: progress.append((d, t)))
        assert [e.path for e in entries] == ["a.bin", "sub/b.txt"]
        assert progress[-1][0] == progress[-1][1] == sum(e.size for e in entries)
        progress.clear()
        client.upload_files({"again.bin": tmp_path / "a.bin"}, progress=lambda d, t: progress.append((d, t)))
        assert progress == [(0, 0)]  # already there: nothing sent
        dest = client.download_blob(entries[0].digest, tmp_path / "out" / "a.bin")
        assert dest.read_bytes() == data
        with pytest.raises(NotFoundError):
            client.download_blob("sha256:" + "1" * 64, tmp_path / "out" / "none")
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.bin"]  # no partial files left


def test_a_submitted_script_logs_points_files_tags_and_a_child(workspace: WorkspaceProcess, tmp_path: Path) -> None:
    with workspace.client() as client:
        run_id = _submit(client, tmp_path, TRAIN)
        run = client.wait_run(run_id, timeout=240, poll=0.2)
        logs = b"".join(chunk for stream, chunk in client.follow_logs(run_id) if stream == "stdout")
        assert run.status == RunStatus.COMPLETED, (run, logs, client.read_logs(run_id, stream="stderr")[0])
        assert f"run {run_id} {run.experiment}".encode() in logs
        loss = client.get_metrics(run_id, "loss")
        assert len(loss) == 10_000
        assert [p.step for p in loss] == list(range(10_000))
        assert loss[-1].value == pytest.approx(1.0 / 10_000)
        assert loss[0] == MetricPoint(name="loss", value=1.0, step=0, timestamp=loss[0].timestamp)
        with pytest.raises(dataclasses.FrozenInstanceError):
            loss[0].value = 2.0  # type: ignore[misc]
        (summary,) = client.get_metrics(run_id, "summary")
        assert summary.kind == MetricKind.ROW and summary.payload == {"best": 0.5}
        assert run.tags.get("stage") == "done"
        assert run.metrics["loss"] == pytest.approx(1.0 / 10_000)
        assert [f.path for f in client.get_snapshot(run_id)] == ["train.py"]
        paths = [a.path for a in client.list_artifacts(run_id, prefix="results/")]
        assert paths == ["results/result.txt"]
        got = client.download_artifact(run_id, "results/result.txt", tmp_path / "result.txt")
        assert got.read_text() == "ok"
        (child,) = client.list_runs(parent_id=run_id, include_children=True)
        assert child.name == "fold-1" and child.status == RunStatus.COMPLETED
        assert [p.value for p in client.get_metrics(child.id)] == [0.75]
        found = client.list_runs(experiment=run.experiment, filter="metrics.loss < 0.001")
        assert [r.id for r in found] == [run_id]


def test_a_script_bound_to_a_run_keeps_its_points_when_it_raises(workspace: WorkspaceProcess, tmp_path: Path) -> None:
    with workspace.client() as client:
        release = tmp_path / "release"
        parent_id = _submit(client, tmp_path, WAIT_FOR_FILE, str(release))
        wait_until(lambda: client.get_run(parent_id).status == RunStatus.RUNNING, timeout=240, what="the parent run")
        try:
            target = client.create_child_run(parent_id, name="external")
        finally:
            release.touch()
        script = tmp_path / "raises.py"
        script.write_text(
            textwrap.dedent(
                """
                from edgewise.cloud import Run

                run = Run.get_context()
                trial = run.child_run("trial")
                for i in range(10_000):
                    run.log("x", float(i))
                trial.log("y", 1.0)
                raise RuntimeError("diverged")
                """
            )
        )
        env = {**workspace.env, "EDGEWISE_RUN_ID": target.id, "EDGEWISE_EXPERIMENT": target.experiment}
        done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and "diverged" in done.stderr
        assert "could not be sent" not in done.stderr
        points = client.get_metrics(target.id, "x")
        assert [p.value for p in points] == [float(i) for i in range(10_000)]
        assert client.wait_run(parent_id, timeout=240, poll=0.2).status == RunStatus.COMPLETED
        (trial,) = client.list_runs(parent_id=target.id, include_children=True)
        assert trial.status == RunStatus.FAILED and "RuntimeError" in (trial.status_reason or "")
        assert [p.value for p in client.get_metrics(trial.id)] == [1.0]


def test_the_model_registry_round_trip(workspace: WorkspaceProcess, tmp_path: Path) -> None:
    name = _unique("model")
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"\x00\x01" * 100)
    (folder / "sub" / "config.json").write_text("{}")
    with workspace.client() as client:
        first = client.register_model(name=name, file=folder, tags={"stage": "dev"}, description="first")
        assert first.version == 1 and sorted(f.path for f in first.files) == ["sub/config.json", "weights.bin"]
        second = client.register_model(name=name, file=folder / "weights.bin", properties={"acc": "0.9"})
        assert second.version == 2 and client.get_model(name).version == 2
        assert [m.version for m in client.list_models(name=name)] == [2, 1]
        assert [m.version for m in client.list_models(name=name, tags={"stage": "dev"})] == [1]
        assert [m.version for m in client.list_models(name=name, tags={"stage": None})] == [1]
        assert len(client.list_models(name=name, limit=1)) == 1
        tagged = client.tag_model(name, 2, set={"stage": "prod"})
        assert tagged.tags == {"stage": "prod"}
        assert client.tag_model(name, 2, remove=["stage"]).tags == {}
        files = client.download_model(name, 1, dest=tmp_path / "got")
        assert sorted(p.relative_to(tmp_path / "got").as_posix() for p in files) == ["sub/config.json", "weights.bin"]
        assert (tmp_path / "got" / "weights.bin").read_bytes() == b"\x00\x01" * 100
        assert client.model_references(name, 1) == []
        client.delete_model(name, 1)
        with pytest.raises(NotFoundError):
            client.get_model(name, 1)
        with pytest.raises(InvalidInputError):
            client.register_model(name="bad name!", file=folder)
