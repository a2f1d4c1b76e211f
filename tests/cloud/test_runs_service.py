"""Runs end to end on a real service: submit, outputs, logs, crash, cancel, child runs, restart, queries."""

from __future__ import annotations

import os
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from edgewise.cloud.client import Client
from edgewise.cloud.errors import ConflictError, InvalidInputError, SnapshotTooLargeError
from edgewise.cloud.store.records import RunSpec, RunStatus

from tests.cloud.service import WorkspaceProcess
from tests.support import wait_until

LOGGING_SCRIPT = """
import sys, pathlib
from edgewise.cloud import Run
run = Run.get_context()
for step in range(50):
    run.log("loss", 1.0 / (step + 1))
run.log("accuracy", float(sys.argv[1]) if len(sys.argv) > 1 else 0.5)
run.set_tags({"kind": "logging"})
pathlib.Path("outputs").mkdir(exist_ok=True)
pathlib.Path("outputs/model.onnx").write_bytes(b"fake-onnx-bytes")
pathlib.Path("outputs/sub").mkdir(exist_ok=True)
pathlib.Path("outputs/sub/notes.txt").write_text("hello")
print("trained", flush=True)
print("a warning", file=sys.stderr, flush=True)
"""


def write_source(root: Path, script: str, *, name: str = "train.py", extra: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(textwrap.dedent(script))
    for rel, text in (extra or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def submit(client: Client, source: Path, experiment: str, *args: str, script: str = "train.py") -> str:
    run = client.submit_run(experiment=experiment, source=source, spec=RunSpec(script=script, arguments=list(args)))
    assert run.status is RunStatus.QUEUED
    return run.id


def test_a_run_records_everything(workspace: WorkspaceProcess, tmp_path: Path) -> None:
    source = write_source(tmp_path / "src", LOGGING_SCRIPT, extra={"data/small.csv": "a,b\n1,2\n"})
    with workspace.client() as client:
        run_id = submit(client, source, "records", "0.75")
        run = client.wait_run(run_id, timeout=120)
        assert run.status is RunStatus.COMPLETED, client.read_logs(run_id, stream="stderr")[0]
        assert run.exit_code == 0 and run.duration is not None and run.duration > 0
        assert run.started_at is not None and run.ended_at is not None and run.started_at >= run.created_at
        assert run.spec is not None and run.spec.arguments == ["0.75"]
        assert run.metrics["accuracy"] == 0.75 and run.tags == {"kind": "logging"}
        losses = client.get_metrics(run_id, "loss")
        assert [p.step for p in losses] == list(range(50))
        assert losses[-1].value == pytest.approx(1 / 50)
        paths = {a.path for a in client.list_artifacts(run_id)}
        assert {"outputs/model.onnx", "outputs/sub/notes.txt", "logs/stdout.txt", "logs/stderr.txt"} <= paths
        assert client.read_logs(run_id, stream="stdout")[0] == b"trained\n"
        assert b"a warning" in client.read_logs(run_id, stream="stderr")[0]
        snapshot = {f.path for f in client.get_snapshot(run_id)}
        assert snapshot == {"train.py", "data/small.csv"}
        assert client.get_experiment("records").run_count == 1


def test_identical_snapshots_share_blobs(workspace: WorkspaceProcess, tmp_path: Path) -> None:
    source = write_source(tmp_path / "src", "print('same')\n")
    with workspace.client() as client:
        ids = [submit(client, source, "shared") for _ in range(3)]
        for run_id in ids:
            assert client.wait_run(run_id, timeout=120).status is RunStatus.COMPLETED
    digest = __import__("hashlib").sha256(b"print('same')\n").hexdigest()
    assert len([p for p in (workspace.data_dir / "blobs").rglob(digest)]) == 1


def test_a_crashing_script_fails_with_its_exit_code_and_keeps_its_metrics(
    workspace: WorkspaceProcess, tmp_path: Path
) -> None:
    script = """
    from edgewise.cloud import Run
    run = Run.get_context()
    for i in range(1000):
        run.log("progress", i)
    raise RuntimeError("diverged at step 1000")
    """
    source = write_source(tmp_path / "src", script)
    with workspace.client() as client:
        run_id = submit(client, source, "crashing")
        run = client.wait_run(run_id, timeout=120)
        assert run.status is RunStatus.FAILED and run.exit_code == 1
        assert run.status_reason and "code 1" in run.status_reason
        assert b"diverged at step 1000" in client.read_logs(run_id, stream="stderr")[0]
        assert len(client.get_metrics(run_id, "progress")) == 1000


def test_cancel_stops_the_whole_process_tree(workspace: WorkspaceProcess, tmp_path: Path) -> None:
    script = """
    import os, subprocess, sys, time, pathlib
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    pathlib.Path(os.environ["PIDS_FILE"]).write_text(f"{os.getpid()} {child.pid}")
    time.sleep(600)
    """
    pids_file = tmp_path / "pids"
    source = write_source(tmp_path / "src", script)
    with workspace.client() as client:
        spec = RunSpec(script="train.py", environment={"PIDS_FILE": str(pids_file)})
        run_id = client.submit_run(experiment="canceling", source=source, spec=spec).id
        wait_until(lambda: pids_file.exists() and pids_file.read_text().strip(), timeout=60, what="script start")
        pids = [int(p) for p in pids_file.read_text().split()]
        assert client.cancel_run(run_id).status is RunStatus.CANCELED
        wait_until(lambda: not any(_alive(pid) for pid in pids), timeout=30, what="the process tree to stop")
        assert client.wait_run(run_id, timeout=30).status is RunStatus.CANCELED
        with pytest.raises(ConflictError):
            client.cancel_run(run_id)


def test_child_runs_and_queries(workspace: WorkspaceProcess, tmp_path: Path) -> None:
    script = """
    import sys
    from edgewise.cloud import Run
    run = Run.get_context()
    for lr in (0.1, 0.01):
        with run.child_run(f"lr={lr}") as child:
            child.log("accuracy", 0.5 + lr)
            with child.child_run("inner") as grandchild:
                grandchild.log("depth", 2)
    run.log("accuracy", float(sys.argv[1]))
    """
    source = write_source(tmp_path / "src", script)
    with workspace.client() as client:
        ids = [submit(client, source, "queries", acc) for acc in ("0.9", "0.7", "0.95")]
        for run_id in ids:
            assert client.wait_run(run_id, timeout=120).status is RunStatus.COMPLETED
        top = client.list_runs(experiment="queries", order_by="metrics.accuracy desc")
        assert [r.id for r in top] == [ids[2], ids[0], ids[1]]
        good = client.list_runs(experiment="queries", filter="metrics.accuracy > 0.8")
        assert {r.id for r in good} == {ids[0], ids[2]}
        everything = client.list_runs(experiment="queries", include_children=True)
        assert len(everything) == 3 * (1 + 2 + 2)
        children = client.list_runs(parent_id=ids[0])
        assert sorted(c.name or "" for c in children) == ["lr=0.01", "lr=0.1"]
        assert all(c.status is RunStatus.COMPLETED for c in children)
        inner = client.list_runs(parent_id=children[0].id)
        assert [r.name for r in inner] == ["inner"] and inner[0].metrics == {"depth": 2.0}


@pytest.mark.parametrize(
    ("files", "script", "error"),
    [
        ({"train.py": "print(1)"}, "missing.py", InvalidInputError),
        ({"train.py": "print(1)", "big.bin": "x" * 4096}, "train.py", SnapshotTooLargeError),
    ],
)
def test_bad_submissions_leave_nothing_behind(
    workspace: WorkspaceProcess, tmp_path: Path, files: dict[str, str], script: str, error: type[Exception]
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for rel, text in files.items():
        (source / rel).write_text(text)
    with workspace.client() as client:
        with pytest.raises(error) as raised:
            client.submit_run(
                experiment="bad-submissions", source=source, spec=RunSpec(script=script), max_snapshot_bytes=1024
            )
        assert str(raised.value)
        assert client.list_runs(experiment="bad-submissions") == []


def test_a_run_in_flight_when_the_service_stops_is_failed_at_the_next_start(
    workspace_factory: Callable[..., WorkspaceProcess], tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    script = f"""
    import os, time, pathlib
    pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))
    time.sleep(600)
    """
    source = write_source(tmp_path / "src", script)
    service = workspace_factory()
    with service.client() as client:
        run_id = submit(client, source, "restarts")
        wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=60, what="script start")
    script_pid = int(pid_file.read_text())
    service.stop(sig=signal.SIGKILL)  # no chance to clean up: the next start must settle it
    restarted = workspace_factory(data_dir=service.data_dir)
    with restarted.client() as client:
        run = client.get_run(run_id)
        assert run.status is RunStatus.FAILED
        assert run.status_reason and "stopped while the run was in flight" in run.status_reason
    wait_until(lambda: not _alive(script_pid), timeout=30, what="the orphaned script to be stopped")


def test_a_graceful_stop_fails_running_runs(workspace_factory: Callable[..., WorkspaceProcess], tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    source = write_source(
        tmp_path / "src",
        f"import os, time, pathlib\npathlib.Path({str(pid_file)!r}).write_text('1')\ntime.sleep(600)\n",
    )
    service = workspace_factory()
    with service.client() as client:
        run_id = submit(client, source, "graceful")
        wait_until(pid_file.exists, timeout=60, what="script start")
    service.stop()
    restarted = workspace_factory(data_dir=service.data_dir)
    with restarted.client() as client:
        assert client.get_run(run_id).status is RunStatus.FAILED


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
