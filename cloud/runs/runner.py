"""The local compute target: submitted runs as subprocesses of the service, a few at a time.

Each job goes through PREPARING (snapshot materialised from blobs, environment built), RUNNING (the script
in its own process group, logs appended live to files) and an end state decided by its exit code. Outputs
and logs are stored as blobs when it ends. The runner works in threads because the script's lifetime has
nothing to do with the HTTP request that queued it; nothing that goes wrong with one job stops the runner.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from edgewise.cloud.errors import ConflictError, ServiceUnavailableError, UnsafePathError, WorkspaceError
from edgewise.cloud.names import check_relpath
from edgewise.cloud.runs.environments import EnvironmentCache
from edgewise.cloud.runs.processes import (
    DEFAULT_GRACE_PERIOD,
    exit_reason,
    group_alive,
    kill_after,
    signal_group,
    stop_orphan,
)
from edgewise.cloud.store.blobs import BlobStore
from edgewise.cloud.store.records import FileEntry, RunSpec, RunStatus

__all__ = ["LocalRunner", "RunEvents", "RunJob", "exit_reason", "stop_orphan"]

log = logging.getLogger(__name__)

LOG_STREAMS = ("stdout", "stderr")
CANCELED_REASON = "canceled by request"


class RunEvents(Protocol):
    """What the runner tells the workspace; implemented by the workspace service."""

    def run_status(
        self, run_id: str, status: RunStatus, *, exit_code: int | None = None, reason: str | None = None
    ) -> None: ...

    def run_pid(self, run_id: str, pid: int | None) -> None: ...

    def run_files(self, run_id: str, files: list[FileEntry]) -> None: ...  # blobs already stored


@dataclass(frozen=True, kw_only=True)
class RunJob:
    run_id: str
    experiment: str
    spec: RunSpec
    snapshot: list[FileEntry]


class _Stopped(Exception):
    """The job was canceled or the runner is stopping: leave the job without starting anything more."""


@dataclass(eq=False)
class _Active:
    job: RunJob
    thread: threading.Thread | None = None
    process: subprocess.Popen[bytes] | None = None
    canceled: bool = False
    stop_reason: str | None = None
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def stopped(self) -> bool:
        return self.canceled or self.stop_reason is not None


class LocalRunner:
    """Runs jobs on this machine, at most `max_concurrent` at once, the others waiting in FIFO order."""

    def __init__(
        self,
        *,
        data_dir: Path,
        blobs: BlobStore,
        events: RunEvents,
        environments: EnvironmentCache,
        max_concurrent: int,
        service_url: str,
        token: str,
        grace_period: float = DEFAULT_GRACE_PERIOD,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.data_dir = data_dir
        self.blobs = blobs
        self.events = events
        self.environments = environments
        self.max_concurrent = max_concurrent
        self.service_url = service_url
        self.token = token
        self.grace_period = grace_period
        self._lock = threading.Lock()
        self._queue: collections.deque[RunJob] = collections.deque()
        self._active: dict[str, _Active] = {}
        self._started = False
        self._stop_reason: str | None = None

    # -- public interface ------------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._stop_reason is not None:
                raise ServiceUnavailableError("the runner has been stopped; start a new one")
            self._started = True
        self._dispatch()

    def submit(self, job: RunJob) -> None:
        """Queue the job; it starts when a slot is free, after the jobs queued before it."""
        with self._lock:
            if self._stop_reason is not None:
                raise ServiceUnavailableError("the service is stopping; submit the run again once it is back")
            self._queue.append(job)
        self._dispatch()

    def cancel(self, run_id: str) -> bool:
        """Drop a queued job, or stop a running one's whole process tree; False if the runner has no such job."""
        process: subprocess.Popen[bytes] | None = None
        with self._lock:
            queued = next((job for job in self._queue if job.run_id == run_id), None)
            if queued is not None:
                self._queue.remove(queued)
            active = self._active.get(run_id)
            if active is not None:
                active.canceled = True  # a job still preparing stops before its script starts
                process = active.process
        if queued is not None:
            self._report(run_id, RunStatus.CANCELED, reason=CANCELED_REASON)
            return True
        if process is not None:
            self._terminate(process.pid, self.grace_period)
        return active is not None

    def stop(self, *, reason: str, timeout: float = 10.0) -> None:
        """Stop every job for a service shutdown: queued and running runs end FAILED with `reason`."""
        with self._lock:
            self._stop_reason = reason
            queued = list(self._queue)
            self._queue.clear()
            active = list(self._active.values())
            for item in active:
                item.stop_reason = reason
        for job in queued:
            self._report(job.run_id, RunStatus.FAILED, reason=reason)
        grace = max(0.1, min(self.grace_period, timeout / 2))
        for item in active:
            if item.process is not None:
                self._terminate(item.process.pid, grace)
        deadline = time.monotonic() + timeout
        for item in active:
            item.finished.wait(max(0.0, deadline - time.monotonic()))
        for item in active:
            if not item.finished.is_set():  # stuck (e.g. in a long pip install): give up on it, record why
                if item.process is not None:
                    signal_group(item.process.pid, signal.SIGKILL)
                self._report(item.job.run_id, RunStatus.FAILED, reason=reason)

    def log_path(self, run_id: str, stream: str) -> Path:
        if stream not in LOG_STREAMS:
            raise ValueError(f"unknown log stream {stream!r}; use one of {', '.join(LOG_STREAMS)}")
        return self._run_dir(run_id) / "logs" / f"{stream}.txt"

    def queued(self) -> list[str]:
        """The ids of the jobs waiting for a slot, first to start first."""
        with self._lock:
            return [job.run_id for job in self._queue]

    def running(self) -> list[str]:
        """The ids of the jobs holding a slot (preparing or running)."""
        with self._lock:
            return list(self._active)

    # -- scheduling ------------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        with self._lock:
            if not self._started or self._stop_reason is not None:
                return
            while self._queue and len(self._active) < self.max_concurrent:
                job = self._queue.popleft()
                active = _Active(job=job)
                active.thread = threading.Thread(
                    target=self._work, args=(active,), name=f"run-{job.run_id}", daemon=True
                )
                self._active[job.run_id] = active
                active.thread.start()

    def _work(self, active: _Active) -> None:
        try:
            self._execute(active)
        except Exception as exc:  # a broken job must not take the runner down
            log.exception("run %s failed inside the runner", active.job.run_id)
            self._note(active.job.run_id, "".join(traceback.format_exception(exc)))
            self._report(active.job.run_id, RunStatus.FAILED, reason=f"the runner failed: {_describe(exc)}")
        finally:
            if active.process is not None and active.process.poll() is None:
                signal_group(active.process.pid, signal.SIGKILL)
            with self._lock:
                self._active.pop(active.job.run_id, None)
            active.finished.set()
            self._dispatch()

    # -- one job ---------------------------------------------------------------------------------------------

    def _execute(self, active: _Active) -> None:
        job = active.job
        script = self._find_script(job)
        if script is None:
            return
        if not self._report(job.run_id, RunStatus.PREPARING):
            return
        run_dir = self._run_dir(job.run_id)
        work = run_dir / "work"
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        exit_code: int | None = None
        stdout, stderr = self.log_path(job.run_id, "stdout"), self.log_path(job.run_id, "stderr")
        with stdout.open("ab") as out, stderr.open("ab") as err:
            try:
                self._materialise(job, work)
                self._check_stopped(active)
                python = self.environments.prepare(job.spec.requirements, log=out)
                self._check_stopped(active)
                if not self._report(job.run_id, RunStatus.RUNNING):
                    raise _Stopped  # it ended in the workspace meanwhile (canceled)
                exit_code = self._run_script(active, python, script, work, out, err)
            except _Stopped:
                pass
            except WorkspaceError as exc:
                err.write(f"edgewise: {exc}\n".encode())
                err.flush()
                self._finish(active, work, status=RunStatus.FAILED, reason=str(exc))
                return
        self._finish(active, work, exit_code=exit_code)

    def _find_script(self, job: RunJob) -> str | None:
        """The script's path in the snapshot, or None after reporting the run FAILED."""
        try:
            script = check_relpath(job.spec.script, what="script path")
        except UnsafePathError as exc:
            self._report(job.run_id, RunStatus.FAILED, reason=str(exc))
            return None
        if script not in {entry.path for entry in job.snapshot}:
            reason = f"the script {script!r} is not in the run's snapshot; check the script path and the ignore files"
            self._report(job.run_id, RunStatus.FAILED, reason=reason)
            return None
        return script

    def _materialise(self, job: RunJob, work: Path) -> None:
        """Write the snapshot's files into the work folder, refusing any path that could land outside it."""
        work.mkdir(parents=True, exist_ok=True)
        root = work.resolve()
        for entry in job.snapshot:
            relative = check_relpath(entry.path, what="snapshot path")
            destination = root / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            if not destination.parent.resolve().is_relative_to(root):
                raise UnsafePathError(f"the snapshot path {entry.path!r} leads outside the run's folder")
            if destination.is_symlink():
                destination.unlink()
            shutil.copyfile(self.blobs.path(entry.digest), destination)
            os.chmod(destination, (entry.mode & 0o777) | 0o600)

    def _run_script(self, active: _Active, python: str, script: str, work: Path, out: BinaryIO, err: BinaryIO) -> int:
        job = active.job
        env = dict(os.environ)
        env.update({str(key): str(value) for key, value in job.spec.environment.items()})
        env.update(
            {
                "EDGEWISE_URL": self.service_url,
                "EDGEWISE_TOKEN": self.token,
                "EDGEWISE_RUN_ID": job.run_id,
                "EDGEWISE_EXPERIMENT": job.experiment,
                "PYTHONUNBUFFERED": "1",
            }
        )
        with self._lock:
            if active.stopped:
                raise _Stopped
            active.process = subprocess.Popen(
                [python, "-u", script, *job.spec.arguments],
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group: cancel reaches every process it starts
            )
        process = active.process
        self._report_pid(job.run_id, process.pid)
        code = process.wait()
        if group_alive(process.pid):  # processes it left behind end with it
            self._terminate(process.pid, self.grace_period if not active.stopped else 0.0, wait=True)
        self._report_pid(job.run_id, None)
        return code

    def _finish(
        self,
        active: _Active,
        work: Path,
        *,
        exit_code: int | None = None,
        status: RunStatus | None = None,
        reason: str | None = None,
    ) -> None:
        """Store outputs and logs, then report how the run ended."""
        job = active.job
        files = self._collect_outputs(job.run_id, work) if exit_code is not None else []
        for stream in LOG_STREAMS:
            path = self.log_path(job.run_id, stream)
            if path.exists():
                digest, size = self.blobs.put_file(path)
                files.append(FileEntry(path=f"logs/{stream}.txt", digest=digest, size=size))
        try:
            self.events.run_files(job.run_id, files)
        except ConflictError:
            pass
        except Exception:
            log.exception("could not record the files of run %s", job.run_id)
        if active.canceled:
            self._report(job.run_id, RunStatus.CANCELED, exit_code=exit_code, reason=CANCELED_REASON)
        elif active.stop_reason is not None:
            self._report(job.run_id, RunStatus.FAILED, exit_code=exit_code, reason=active.stop_reason)
        elif status is not None:
            self._report(job.run_id, status, exit_code=exit_code, reason=reason)
        elif exit_code == 0:
            self._report(job.run_id, RunStatus.COMPLETED, exit_code=0)
        else:
            self._report(job.run_id, RunStatus.FAILED, exit_code=exit_code, reason=exit_reason(exit_code))

    def _collect_outputs(self, run_id: str, work: Path) -> list[FileEntry]:
        """Every file under ./outputs as a blob; links leading outside the run's folder are skipped."""
        outputs = work / "outputs"
        if not outputs.is_dir() or outputs.is_symlink():
            return []
        root = work.resolve()
        entries: list[FileEntry] = []
        seen: set[Path] = set()
        pending = [(outputs, "outputs")]
        while pending:
            directory, prefix = pending.pop()
            real = directory.resolve()
            if real in seen:
                continue
            seen.add(real)
            for item in sorted(directory.iterdir()):
                path = f"{prefix}/{item.name}"
                target = item.resolve() if item.is_symlink() else item
                if item.is_symlink() and (not target.exists() or not target.is_relative_to(root)):
                    self._note(run_id, f"edgewise: skipped {path}: a link to {target}, outside the run's folder")
                    continue
                if target.is_dir():
                    pending.append((target, path))
                elif target.is_file():
                    digest, size = self.blobs.put_file(target)
                    mode = target.stat().st_mode & 0o777
                    entries.append(FileEntry(path=path, digest=digest, size=size, mode=mode))
        return sorted(entries, key=lambda e: e.path)

    # -- helpers ---------------------------------------------------------------------------------------------

    def _run_dir(self, run_id: str) -> Path:
        return self.data_dir / "runs" / check_relpath(run_id, what="run id")

    def _check_stopped(self, active: _Active) -> None:
        if active.stopped:
            raise _Stopped

    def _report(
        self, run_id: str, status: RunStatus, *, exit_code: int | None = None, reason: str | None = None
    ) -> bool:
        """Tell the workspace; False when the run has already ended there (e.g. canceled meanwhile)."""
        try:
            self.events.run_status(run_id, status, exit_code=exit_code, reason=reason)
        except ConflictError:
            return False
        except Exception:
            log.exception("could not record run %s as %s", run_id, status.value)
            return False
        return True

    def _report_pid(self, run_id: str, pid: int | None) -> None:
        try:
            self.events.run_pid(run_id, pid)
        except Exception:
            log.warning("could not record the pid of run %s", run_id, exc_info=True)

    def _note(self, run_id: str, message: str) -> None:
        """A line from the runner itself in the run's stderr log."""
        try:
            path = self.log_path(run_id, "stderr")
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab") as handle:
                handle.write(message.rstrip("\n").encode() + b"\n")
        except OSError:
            log.warning("could not write to the log of run %s", run_id, exc_info=True)

    def _terminate(self, pgid: int, grace: float, *, wait: bool = False) -> None:
        """SIGTERM the process group now and SIGKILL it after `grace` seconds if anything is left."""
        signal_group(pgid, signal.SIGTERM)
        if wait:
            kill_after(pgid, grace)
        else:
            threading.Thread(target=kill_after, args=(pgid, grace), name=f"kill-{pgid}", daemon=True).start()


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
