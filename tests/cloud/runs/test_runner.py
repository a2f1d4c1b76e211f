"""The local runner with real subprocesses, a real blob store and an events recorder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from edgewise.cloud.errors import ConflictError
from edgewise.cloud.runs.environments import EnvironmentCache
from edgewise.cloud.runs.runner import LocalRunner, RunJob, exit_reason, stop_orphan
from edgewise.cloud.store.blobs import BlobStore
from edgewise.cloud.store.records import FileEntry, RunSpec, RunStatus

from tests.cloud.runs.wheels import build_wheel
from tests.support import wait_until

TIMEOUT = 120.0


class Recorder:
    """RunEvents kept in memory, with the workspace's rule that an ended run never changes again."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.events: list[tuple[str, RunStatus, int | None, str | None]] = []
        self.status: dict[str, RunStatus] = {}
        self.pids: dict[str, list[int | None]] = {}
        self.files: dict[str, list[FileEntry]] = {}

    def run_status(
        self, run_id: str, status: RunStatus, *, exit_code: int | None = None, reason: str | None = None
    ) -> None:
        with self.lock:
            current = self.status.get(run_id)
            if current is not None and current.terminal:
                raise ConflictError(f"run {run_id} has already ended ({current.value})")
            self.status[run_id] = status
            self.events.append((run_id, status, exit_code, reason))
            self.lock.notify_all()

    def run_pid(self, run_id: str, pid: int | None) -> None:
        with self.lock:
            self.pids.setdefault(run_id, []).append(pid)

    def run_files(self, run_id: str, files: list[FileEntry]) -> None:
        with self.lock:
            self.files.setdefault(run_id, []).extend(files)

    def statuses(self, run_id: str) -> list[RunStatus]:
        with self.lock:
            return [status for rid, status, _, _ in self.events if rid == run_id]

    def last(self, run_id: str) -> tuple[str, RunStatus, int | None, str | None]:
        with self.lock:
            return [event for event in self.events if event[0] == run_id][-1]

    def wait_for(self, run_id: str, status: RunStatus, timeout: float = TIMEOUT) -> None:
        with self.lock:
            if not self.lock.wait_for(lambda: status in self.statuses(run_id), timeout=timeout):
                pytest.fail(f"run {run_id} did not become {status.value}; it went {self.statuses(run_id)}")

    def wait_ended(self, run_id: str, timeout: float = TIMEOUT) -> tuple[str, RunStatus, int | None, str | None]:
        with self.lock:
            ended = self.lock.wait_for(lambda: run_id in self.status and self.status[run_id].terminal, timeout)
            if not ended:
                pytest.fail(f"run {run_id} did not end; it went {self.statuses(run_id)}")
        return self.last(run_id)


class Harness:
    def __init__(self, tmp_path: Path, max_concurrent: int = 2) -> None:
        self.data_dir = tmp_path / "data"
        self.blobs = BlobStore(root=self.data_dir / "blobs")
        self.events = Recorder()
        self.runner = LocalRunner(
            data_dir=self.data_dir,
            blobs=self.blobs,
            events=self.events,
            environments=EnvironmentCache(root=self.data_dir / "envs"),
            max_concurrent=max_concurrent,
            service_url="http://127.0.0.1:9",
            token="test-token",
            grace_period=2.0,
        )
        self.count = 0

    def job(self, files: dict[str, str], *, script: str = "train.py", **spec: Any) -> RunJob:
        self.count += 1
        entries = []
        for path, text in files.items():
            digest, size = self.blobs.put_bytes(textwrap.dedent(text).encode())
            mode = 0o755 if path.endswith(".sh") else 0o644
            entries.append(FileEntry(path=path, digest=digest, size=size, mode=mode))
        return RunJob(
            run_id=f"run{self.count}", experiment="tests", spec=RunSpec(script=script, **spec), snapshot=entries
        )

    def submit(self, files: dict[str, str], **kwargs: Any) -> str:
        job = self.job(files, **kwargs)
        self.runner.submit(job)
        return job.run_id

    def artifact(self, run_id: str, path: str) -> bytes:
        entry = next(f for f in self.events.files[run_id] if f.path == path)
        return self.blobs.path(entry.digest).read_bytes()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    h.runner.start()
    yield h
    h.runner.stop(reason="test over", timeout=10)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


OUTPUTS_SCRIPT = """
import json, os, pathlib, sys
out = pathlib.Path("outputs")
(out / "sub").mkdir(parents=True)
(out / "model.bin").write_bytes(b"weights")
(out / "sub" / "notes.txt").write_text("hello")
(out / "leak").symlink_to("/etc/hostname")
(out / "inside").symlink_to("../data.txt")
ours = lambda k: k.startswith("EDGEWISE_") and not k.startswith("EDGEWISE_TEST_")
env = {k: v for k, v in os.environ.items() if ours(k) or k in ("PYTHONUNBUFFERED", "MY_VAR")}
(out / "env.json").write_text(json.dumps({"env": env, "argv": sys.argv[1:], "cwd": os.getcwd()}))
print("trained")
print("a warning", file=sys.stderr)
"""


def test_a_run_completes_with_outputs_logs_and_its_environment(harness: Harness) -> None:
    run_id = harness.submit(
        {"train.py": OUTPUTS_SCRIPT, "data.txt": "data"},
        arguments=["--epochs", "5"],
        environment={"MY_VAR": "mine", "EDGEWISE_RUN_ID": "not-allowed"},
    )
    _, status, exit_code, reason = harness.events.wait_ended(run_id)
    stderr = harness.runner.log_path(run_id, "stderr").read_text()
    assert (status, exit_code, reason) == (RunStatus.COMPLETED, 0, None), stderr
    assert harness.events.statuses(run_id) == [RunStatus.PREPARING, RunStatus.RUNNING, RunStatus.COMPLETED]
    pids = harness.events.pids[run_id]
    assert len(pids) == 2 and isinstance(pids[0], int) and pids[1] is None
    paths = sorted(f.path for f in harness.events.files[run_id])
    assert paths == [
        "logs/stderr.txt",
        "logs/stdout.txt",
        "outputs/env.json",
        "outputs/inside",
        "outputs/model.bin",
        "outputs/sub/notes.txt",
    ]
    assert harness.artifact(run_id, "outputs/model.bin") == b"weights"
    assert harness.artifact(run_id, "outputs/inside") == b"data"
    assert harness.artifact(run_id, "logs/stdout.txt") == b"trained\n"
    assert b"a warning" in harness.artifact(run_id, "logs/stderr.txt")
    assert b"skipped outputs/leak" in harness.artifact(run_id, "logs/stderr.txt")
    recorded = json.loads(harness.artifact(run_id, "outputs/env.json"))
    assert recorded["argv"] == ["--epochs", "5"]
    assert recorded["cwd"] == str((harness.data_dir / "runs" / run_id / "work").resolve())
    # what the service's own environment holds (e.g. CI's EDGEWISE_FPGA_CACHE) reaches the script as it is
    ours = [k for k in os.environ if k.startswith("EDGEWISE_") and not k.startswith("EDGEWISE_TEST_")]
    inherited = {k: os.environ[k] for k in ours}
    assert recorded["env"] == {
        **inherited,
        "EDGEWISE_URL": "http://127.0.0.1:9",
        "EDGEWISE_TOKEN": "test-token",
        "EDGEWISE_RUN_ID": run_id,
        "EDGEWISE_EXPERIMENT": "tests",
        "PYTHONUNBUFFERED": "1",
        "MY_VAR": "mine",
    }


def test_the_snapshot_keeps_file_modes_and_folders(harness: Harness) -> None:
    script = """
    import os, subprocess
    assert os.access("tools/hello.sh", os.X_OK) and not os.access("train.py", os.X_OK)
    print(subprocess.run(["./tools/hello.sh"], capture_output=True, text=True, check=True).stdout, end="")
    """
    run_id = harness.submit({"train.py": script, "tools/hello.sh": "#!/bin/sh\necho from the shell\n"})
    assert harness.events.wait_ended(run_id)[1] is RunStatus.COMPLETED
    assert harness.artifact(run_id, "logs/stdout.txt") == b"from the shell\n"


def test_a_crashing_script_fails_with_its_exit_code_and_stderr(harness: Harness) -> None:
    run_id = harness.submit({"train.py": "raise RuntimeError('diverged at step 2')\n"})
    _, status, exit_code, reason = harness.events.wait_ended(run_id)
    assert (status, exit_code, reason) == (RunStatus.FAILED, 1, "script exited with code 1")
    assert b"RuntimeError: diverged at step 2" in harness.artifact(run_id, "logs/stderr.txt")
    other = harness.submit({"train.py": "import sys\nsys.exit(3)\n"})
    assert harness.events.wait_ended(other)[1:] == (RunStatus.FAILED, 3, "script exited with code 3")


def test_a_missing_script_fails_before_anything_starts(harness: Harness) -> None:
    run_id = harness.submit({"other.py": "print(1)\n"}, script="train.py")
    _, status, _, reason = harness.events.wait_ended(run_id)
    assert status is RunStatus.FAILED and reason is not None and "'train.py' is not in the run's snapshot" in reason
    assert harness.events.statuses(run_id) == [RunStatus.FAILED]
    assert run_id not in harness.events.pids and not (harness.data_dir / "runs" / run_id).exists()


def test_a_snapshot_path_that_escapes_fails_the_run_and_the_runner_goes_on(harness: Harness) -> None:
    job = harness.job({"train.py": "print(1)\n"})
    digest = job.snapshot[0].digest
    bad = RunJob(
        run_id="escape",
        experiment="tests",
        spec=job.spec,
        snapshot=[*job.snapshot, FileEntry(path="../../evil.py", digest=digest, size=9)],
    )
    harness.runner.submit(bad)
    _, status, _, reason = harness.events.wait_ended("escape")
    assert status is RunStatus.FAILED and reason is not None and "escapes its folder" in reason
    assert not (harness.data_dir / "evil.py").exists()
    missing_blob = RunJob(
        run_id="no-blob",
        experiment="tests",
        spec=job.spec,
        snapshot=[FileEntry(path="train.py", digest="sha256:" + "0" * 64, size=1)],
    )
    harness.runner.submit(missing_blob)
    _, status, _, reason = harness.events.wait_ended("no-blob")
    assert status is RunStatus.FAILED and reason is not None and "no blob" in reason
    assert harness.events.wait_ended(harness.submit({"train.py": "print('fine')\n"}))[1] is RunStatus.COMPLETED


def test_a_script_killed_by_a_signal(harness: Harness) -> None:
    run_id = harness.submit({"train.py": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"})
    _, status, exit_code, reason = harness.events.wait_ended(run_id)
    assert (status, exit_code, reason) == (RunStatus.FAILED, -9, "killed by signal SIGKILL")
    assert exit_reason(-15) == "killed by signal SIGTERM"


TREE_SCRIPT = """
import os, pathlib, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL after the grace period ends it
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
pathlib.Path("pids.tmp").write_text(f"{os.getpid()} {child.pid}")
os.rename("pids.tmp", "pids")
print("started", flush=True)
time.sleep(600)
"""


def read_pids(harness: Harness, run_id: str) -> list[int]:
    pids = harness.data_dir / "runs" / run_id / "work" / "pids"
    wait_until(pids.exists, timeout=TIMEOUT, what="the script to start")
    return [int(p) for p in pids.read_text().split()]


def test_cancel_stops_the_whole_process_tree(harness: Harness) -> None:
    run_id = harness.submit({"train.py": TREE_SCRIPT})
    pids = read_pids(harness, run_id)
    assert all(alive(pid) for pid in pids)
    assert harness.runner.cancel(run_id) is True
    _, status, _, reason = harness.events.wait_ended(run_id)
    assert status is RunStatus.CANCELED and reason == "canceled by request"
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=30, what="the process tree to stop")
    assert harness.artifact(run_id, "logs/stdout.txt") == b"started\n"
    assert harness.runner.cancel(run_id) is False


def test_the_concurrency_limit_queues_in_order_and_cancel_drops_a_queued_job(tmp_path: Path) -> None:
    h = Harness(tmp_path, max_concurrent=1)
    gate = tmp_path / "gate"
    waiting = f"import pathlib, time\nwhile not pathlib.Path({str(gate)!r}).exists(): time.sleep(0.05)\nprint('done')\n"
    first = h.job({"train.py": waiting})
    second = h.job({"train.py": "print('second')\n"})
    dropped = h.job({"train.py": "print('never')\n"})
    for job in (first, second, dropped):
        h.runner.submit(job)
    assert h.events.events == []  # nothing runs before start()
    h.runner.start()
    try:
        h.events.wait_for(first.run_id, RunStatus.RUNNING)
        assert h.runner.running() == [first.run_id]
        assert h.runner.queued() == [second.run_id, dropped.run_id]
        assert h.events.statuses(second.run_id) == []
        assert h.runner.cancel(dropped.run_id) is True
        assert h.events.statuses(dropped.run_id) == [RunStatus.CANCELED]
        gate.touch()
        assert h.events.wait_ended(second.run_id)[1] is RunStatus.COMPLETED
        order = [(rid, status) for rid, status, _, _ in h.events.events]
        assert order.index((first.run_id, RunStatus.COMPLETED)) < order.index((second.run_id, RunStatus.PREPARING))
        assert dropped.run_id not in h.events.files
    finally:
        h.runner.stop(reason="test over")


def test_stop_fails_running_and_queued_runs(tmp_path: Path) -> None:
    h = Harness(tmp_path, max_concurrent=1)
    h.runner.start()
    running = h.submit({"train.py": TREE_SCRIPT})
    queued = h.submit({"train.py": "print('never')\n"})
    pids = read_pids(h, running)
    h.runner.stop(reason="the service is shutting down", timeout=10)
    assert h.events.last(running)[1:] == (RunStatus.FAILED, -signal.SIGKILL, "the service is shutting down")
    assert h.events.statuses(queued) == [RunStatus.FAILED]
    assert h.events.last(queued)[3] == "the service is shutting down"
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=30, what="the process tree to stop")
    with pytest.raises(Exception, match="stopping"):
        h.runner.submit(h.job({"train.py": "print(1)\n"}))


def test_stop_orphan_only_touches_run_process_groups(harness: Harness) -> None:
    run_id = harness.submit({"train.py": TREE_SCRIPT})
    pids = read_pids(harness, run_id)
    assert stop_orphan(pids[0]) is True  # as a restarted service would, with the recorded pid
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=30, what="the orphan to stop")
    assert harness.events.wait_ended(run_id)[1] is RunStatus.FAILED
    assert stop_orphan(pids[0]) is False
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWISE_")}
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True, env=env)
    try:
        assert stop_orphan(stranger.pid) is False  # a group without a run's environment is left alone
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_run_with_requirements_gets_its_own_environment(harness: Harness, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "tinypkg", "2.0", "VALUE = 'tiny'\n")
    script = """
    import sys, tinypkg, edgewise.cloud
    print(tinypkg.VALUE, edgewise.cloud.__name__, sys.prefix != sys.base_prefix)
    """
    requirements = f"--no-index\n--find-links {wheels}\ntinypkg==2.0\n"
    run_id = harness.submit({"train.py": script}, requirements=requirements)
    _, status, _, reason = harness.events.wait_ended(run_id, timeout=300)
    stdout = harness.artifact(run_id, "logs/stdout.txt")
    assert status is RunStatus.COMPLETED, (reason, stdout, harness.artifact(run_id, "logs/stderr.txt"))
    assert b"Successfully installed tinypkg-2.0" in stdout  # the build's output is part of the run's log
    assert stdout.endswith(b"tiny edgewise.cloud True\n")


def test_a_failed_environment_build_fails_the_run(harness: Harness, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    requirements = f"--no-index\n--find-links {tmp_path / 'empty'}\nabsent-package==1\n"
    run_id = harness.submit({"train.py": "print(1)\n"}, requirements=requirements)
    _, status, _, reason = harness.events.wait_ended(run_id, timeout=300)
    assert status is RunStatus.FAILED and reason is not None and "could not install the requirements" in reason
    assert harness.events.statuses(run_id) == [RunStatus.PREPARING, RunStatus.FAILED]
    assert b"absent-package" in harness.artifact(run_id, "logs/stdout.txt")
