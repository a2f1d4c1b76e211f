"""The state directory: the accepted manifest and the module records, each saved crash-safe in place.

The agent keeps nothing in memory that it cannot rebuild from here: after a crash it re-verifies the saved
manifest, reads the module records, adopts the processes that still run and converges again. Both are small
files saved in two slots taken in turn (`slotfile.py`: `manifest.a`/`.b`, `records.a`/`.b`), so a power cut
leaves the old or the new content, never half of one, and a save allocates no inode: the agent saves several
times per deployment. A `manifest.json` (or `modules/{name}/record.json`, from agents before the slots) is read
when no slot holds a save yet, and replaced by the slots at the first save.

The agent queues its saves (`queue_record`, `queue_manifest`, `queue_module_removal`): a worker thread writes
them in order while the event loop goes on, and `await saved()` returns once everything queued is on disk. The
plain `save_*` and `delete_module` calls wait for their write before they return.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edgewise.runtime.agent.errors import AgentError, ManifestError
from edgewise.runtime.agent.manifest import parse_manifest
from edgewise.runtime.agent.model import (
    DesiredStatus,
    Manifest,
    ModuleSettings,
    ModuleSpec,
    ModuleType,
    RestartPolicy,
    RuntimeStatus,
)
from edgewise.runtime.agent.signing import PublicKey
from edgewise.runtime.agent.slotfile import SlotFile
from edgewise.runtime.agent.state_writer import StateWriter, writer_for

log = logging.getLogger(__name__)

MANIFEST = "manifest"  # the slots' base name in the state directory
RECORDS = "records"
_RECORDS_KEPT = "records documents"  # the writer keeps the records as last saved under this key
LEGACY_MANIFEST = "manifest.json"  # read when no slot holds a manifest: an earlier agent's, or one put there by hand
LEGACY_RECORD = "record.json"  # modules/{name}/record.json of an earlier agent
_ADMIN = re.compile(r"^admin-(\d+)$")
# A unix socket path holds at most 107 bytes: the sockets' folders are named after a short hash of the state
# directory and the module, under the runtime folder.
_SOCKET_PATH_MAX = 107
_SOCKET_NAME = "grpc.sock"


def default_runtime_dir() -> Path:
    """Where the modules' sockets go unless the settings say: the session's runtime folder ($XDG_RUNTIME_DIR),
    else /run for root, else the temporary folder. /run and a session's runtime folder are RAM file systems on
    systemd hosts: a module start then writes nothing to the device's storage for its sockets."""
    session = os.environ.get("XDG_RUNTIME_DIR")
    if session:
        return Path(session)
    if os.geteuid() == 0 and os.access("/run", os.W_OK | os.X_OK):
        return Path("/run")
    return Path(tempfile.gettempdir())


def sockets_dir(runtime_dir: Path | None = None) -> Path:
    """This user's folder for the modules' sockets under `runtime_dir` (None: `default_runtime_dir()`)."""
    runtime = runtime_dir if runtime_dir is not None else default_runtime_dir()
    return runtime.absolute() / f"edgewise-agent-{os.getuid()}"


def private_sockets_dir(runtime_dir: Path | None = None) -> Path:
    """`sockets_dir`, created with mode 0700 or checked to be ours and private: in a shared /tmp, a folder
    someone else made is refused (AgentError)."""
    path = sockets_dir(runtime_dir)
    _private_folder(path)
    return path


@dataclass(frozen=True, kw_only=True)
class Rollback:
    """Why a module still runs its previous version: the new one (`from_digest`) failed under that manifest."""

    from_digest: str
    reason: str
    manifest_version: int

    def report(self) -> dict[str, Any]:
        return {"fromDigest": self.from_digest, "reason": self.reason}


@dataclass(frozen=True, kw_only=True)
class ModuleRecord:
    """What the agent knows about one module, enough to adopt its process after the agent restarts.

    `spec` is the normalised spec of the version that runs (or was last attempted when nothing runs);
    `manifest_version` is the manifest version the agent last acted on for this module.
    """

    name: str
    generation: int = 0
    pid: int | None = None
    start_ticks: int | None = None
    started_at: float | None = None
    image: str | None = None
    digest: str | None = None
    spec: Mapping[str, Any] | None = None
    manifest_version: int | None = None
    restart_count: int = 0
    last_start: float | None = None
    last_exit: float | None = None
    exit_code: int | None = None
    status: RuntimeStatus = RuntimeStatus.UNKNOWN
    description: str = ""
    rollback: Rollback | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "generation": self.generation,
            "pid": self.pid,
            "startTicks": self.start_ticks,
            "startedAt": self.started_at,
            "image": self.image,
            "digest": self.digest,
            "spec": dict(self.spec) if self.spec is not None else None,
            "manifestVersion": self.manifest_version,
            "restartCount": self.restart_count,
            "lastStart": self.last_start,
            "lastExit": self.last_exit,
            "exitCode": self.exit_code,
            "status": self.status.value,
            "description": self.description,
            "rollback": None
            if self.rollback is None
            else {
                "fromDigest": self.rollback.from_digest,
                "reason": self.rollback.reason,
                "manifestVersion": self.rollback.manifest_version,
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModuleRecord:
        rollback = data.get("rollback")
        spec = data.get("spec")
        return cls(
            name=str(data["name"]),
            generation=int(data.get("generation") or 0),
            pid=_opt_int(data.get("pid")),
            start_ticks=_opt_int(data.get("startTicks")),
            started_at=_opt_float(data.get("startedAt")),
            image=data.get("image"),
            digest=data.get("digest"),
            spec=MappingProxyType(dict(spec)) if isinstance(spec, dict) else None,
            manifest_version=_opt_int(data.get("manifestVersion")),
            restart_count=int(data.get("restartCount") or 0),
            last_start=_opt_float(data.get("lastStart")),
            last_exit=_opt_float(data.get("lastExit")),
            exit_code=_opt_int(data.get("exitCode")),
            status=RuntimeStatus(data.get("status", RuntimeStatus.UNKNOWN.value)),
            description=str(data.get("description") or ""),
            rollback=None
            if not isinstance(rollback, dict)
            else Rollback(
                from_digest=str(rollback["fromDigest"]),
                reason=str(rollback["reason"]),
                manifest_version=int(rollback["manifestVersion"]),
            ),
        )

    def with_changes(self, **changes: Any) -> ModuleRecord:
        return replace(self, **changes)


def spec_document(spec: ModuleSpec) -> dict[str, Any]:
    """A module spec as normalised JSON (every default spelled out), so equal specs compare equal."""
    s = spec.settings
    return {
        "type": spec.type.value,
        "image": spec.image,
        "status": spec.status.value,
        "restartPolicy": spec.restart_policy.value,
        "env": dict(sorted(spec.env.items())),
        "settings": {
            "httpPort": s.http_port,
            "grpcPort": s.grpc_port,
            "host": s.host,
            "maxRestarts": s.max_restarts,
            "startupTimeoutSecs": s.startup_timeout,
            "warmup": s.warmup,
            "metrics": s.metrics,
        },
    }


def spec_from_document(name: str, document: Mapping[str, Any]) -> ModuleSpec:
    """The inverse of `spec_document` (for restarting the version a record says runs)."""
    s = document["settings"]
    return ModuleSpec(
        name=name,
        type=ModuleType(document["type"]),
        image=str(document["image"]),
        status=DesiredStatus(document["status"]),
        restart_policy=RestartPolicy(document["restartPolicy"]),
        env=MappingProxyType(dict(document.get("env", {}))),
        settings=ModuleSettings(
            http_port=int(s["httpPort"]),
            grpc_port=int(s["grpcPort"]),
            host=str(s["host"]),
            max_restarts=int(s["maxRestarts"]),
            startup_timeout=float(s["startupTimeoutSecs"]),
            warmup=bool(s["warmup"]),
            metrics=bool(s["metrics"]),
        ),
    )


def same_deployment(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Whether two normalised specs can share one running process (only the desired status may differ)."""
    if a is None or b is None:
        return False
    return {k: v for k, v in a.items() if k != "status"} == {k: v for k, v in b.items() if k != "status"}


def read_record_documents(root: Path) -> dict[str, Any]:
    """The module records saved in the state directory `root`, as JSON documents by module name (what the slots
    hold, else an earlier agent's record files; an unreadable one of those is left out)."""
    return _record_documents(root, SlotFile(root / RECORDS).read())


def _record_documents(root: Path, content: bytes | None) -> dict[str, Any]:
    if content is not None:
        modules = json.loads(content).get("modules")
        return dict(modules) if isinstance(modules, dict) else {}
    documents: dict[str, Any] = {}
    for path in _legacy_records(root):
        try:
            documents[path.parent.name] = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable module record %s: %s", path, exc)
    return documents


def _legacy_records(root: Path) -> list[Path]:
    """An earlier agent's record files in the state directory `root` (modules/{name}/record.json)."""
    return sorted((root / "modules").glob(f"*/{LEGACY_RECORD}"))


@dataclass(frozen=True, kw_only=True)
class StateDir:
    """The layout of the agent's state directory (docs/agent.md, "The state directory")."""

    root: Path
    runtime_dir: Path | None = None  # the modules' sockets go under it (None: `default_runtime_dir()`)
    _writer: StateWriter = field(init=False, repr=False, compare=False)
    _sockets: Path = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            self.modules_dir.mkdir(parents=True, exist_ok=True)
            self.images_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AgentError(f"cannot create the state directory {self.root}: {exc}") from None
        try:
            object.__setattr__(self, "_sockets", private_sockets_dir(self.runtime_dir))
        except OSError as exc:
            raise AgentError(f"cannot create the modules' sockets folder: {exc} (set runtime_dir)") from None
        object.__setattr__(self, "_writer", writer_for(self.root))

    async def saved(self) -> None:
        """Return once every save queued so far is on disk; raise the first write error since the last wait
        (OSError: that file keeps its previous content)."""
        await self._writer.flushed()

    async def saved_or_error(self) -> Exception | None:
        """`saved()` for callers that go on either way: a failed write is logged and returned, not raised."""
        try:
            await self.saved()
        except OSError as exc:
            log.warning("could not save the agent's state: %s", exc)
            return exc
        except Exception as exc:  # the records in memory stay right; the next save of each writes them
            log.exception("saving the agent's state failed unexpectedly")
            return exc
        return None

    @property
    def manifest_base(self) -> Path:
        """Where the accepted manifest is saved (`slotfile.py`: the slots are this path with .a and .b)."""
        return self.root / MANIFEST

    @property
    def modules_dir(self) -> Path:
        return self.root / "modules"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def telemetry_db(self) -> Path:
        return self.root / "telemetry.sqlite"

    def module_dir(self, name: str) -> Path:
        return self.modules_dir / name

    def data_dir(self, name: str) -> Path:
        return self.module_dir(name) / "data"

    def log_path(self, name: str) -> Path:
        return self.module_dir(name) / "log"

    def sample_file(self, name: str) -> Path:
        """Where a module appends sampled inputs and outputs; the telemetry collector reads it."""
        return self.data_dir(name) / "samples.jsonl"

    @property
    def sockets_dir(self) -> Path:
        """The folder of the modules' sockets (`private_sockets_dir()` of the runtime folder, made or checked
        when the state directory is opened; a module launcher shows it)."""
        return self._sockets

    def admin_dir(self, name: str, generation: int) -> Path:
        """A generation's socket folder. Agents before the runtime folder kept it in the module's own folder:
        a module such an agent started still has its sockets there when the updated agent adopts it."""
        earlier = self.module_dir(name) / f"admin-{generation}"
        if earlier.is_dir():
            return earlier
        return self._sockets_of(name) / f"admin-{generation}"

    def _sockets_of(self, name: str) -> Path:
        return _sockets_folder(self.root, name, self._sockets)

    # -- the accepted manifest -------------------------------------------------------------------

    def save_manifest(self, document: bytes) -> None:
        """Keep an accepted manifest verbatim, on disk when this returns."""
        self.queue_manifest(document)
        self._writer.wait()

    def queue_manifest(self, document: bytes) -> None:
        """Keep an accepted manifest verbatim once `saved()` says so; the agent waits for that before it starts
        or stops anything, so a manifest is saved before it is applied."""
        base, legacy = self.manifest_base, self.root / LEGACY_MANIFEST

        def write() -> None:
            self._slots(base).write(document)
            with contextlib.suppress(FileNotFoundError):
                legacy.unlink()  # the slots hold a newer one

        self._writer.queue(MANIFEST, write)

    def saved_manifest(self) -> bytes | None:
        """The accepted manifest as saved (not verified), or None when there is none."""
        self._writer.wait(check=False)
        content = SlotFile(self.manifest_base).read()
        if content is not None:
            return content
        try:
            return (self.root / LEGACY_MANIFEST).read_bytes()
        except FileNotFoundError:
            return None

    def load_manifest(self, *, device_id: str, public_key: PublicKey) -> Manifest | None:
        """The accepted manifest, verified again; None when there is none or it no longer verifies."""
        payload = self.saved_manifest()  # saves still queued (by an agent stopped in this process) land first
        if payload is None:
            return None
        try:
            return parse_manifest(payload, device_id=device_id, public_key=public_key)
        except ManifestError as exc:
            aside = self.root / f"{LEGACY_MANIFEST}.refused"
            aside.write_bytes(payload)
            self._writer.kept.pop(str(self.manifest_base), None)
            SlotFile(self.manifest_base).remove()
            with contextlib.suppress(FileNotFoundError):
                (self.root / LEGACY_MANIFEST).unlink()
            log.warning("the saved manifest no longer verifies (%s: %s); moved it to %s", exc.code, exc, aside)
            return None

    # -- module records --------------------------------------------------------------------------

    def save_record(self, record: ModuleRecord) -> None:
        """Save a module record (and create its data folder), on disk when this returns."""
        self.queue_record(record)
        self._writer.wait()

    def queue_record(self, record: ModuleRecord) -> None:
        """Save a module record (and create its data folder) once `saved()` says so; a later save of the same
        module that comes before the write replaces it."""
        folder, document = self.module_dir(record.name), record.to_json()

        def write() -> None:
            (folder / "data").mkdir(parents=True, exist_ok=True)
            self._update_records(record.name, document)

        self._writer.queue(f"record {record.name}", write)

    def load_records(self) -> dict[str, ModuleRecord]:
        """Every readable record; an unreadable one is logged and skipped (its module is started afresh)."""
        self._writer.wait(check=False)
        records: dict[str, ModuleRecord] = {}
        for name, document in read_record_documents(self.root).items():
            try:
                record = ModuleRecord.from_json(document)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("ignoring the unreadable record of module %s: %s", name, exc)
                continue
            records[record.name] = record
        return records

    def _slots(self, base: Path) -> SlotFile:
        """On the writer's thread: the slots behind `base`, read at their first save only (the writer is their
        only writer, and a `SlotFile` knows which slot its last write took)."""
        kept = self._writer.kept
        slots = kept.get(str(base))
        if not isinstance(slots, SlotFile):
            slots = kept[str(base)] = SlotFile(base)
        return slots

    def _update_records(self, name: str, document: Mapping[str, Any] | None) -> None:
        """On the writer's thread: the saved records with `name`'s replaced (or removed, for None), saved again.

        The records as last saved are kept with the writer, so a save reads and parses nothing."""
        slots = self._slots(self.root / RECORDS)
        kept = self._writer.kept
        documents = kept.pop(_RECORDS_KEPT, None)
        migrating = False
        if not isinstance(documents, dict):
            content = slots.read()
            migrating = content is None
            documents = _record_documents(self.root, content)
        if document is None:
            if documents.pop(name, None) is None and not migrating:
                kept[_RECORDS_KEPT] = documents
                return
        else:
            documents[name] = document
        slots.write(json.dumps({"modules": documents}, sort_keys=True).encode() + b"\n")
        kept[_RECORDS_KEPT] = documents  # only once saved: after a failed save they are read again
        if migrating:  # an earlier agent's record files: the slots hold them all now
            for path in _legacy_records(self.root):
                with contextlib.suppress(OSError):
                    path.unlink()

    def delete_module(self, name: str) -> None:
        """Forget a module removed from the manifest: its record, data, logs and sockets (gone on return)."""
        self.queue_module_removal(name)
        self._writer.wait()

    def queue_module_removal(self, name: str) -> None:
        """`delete_module` in its place among the queued saves: a record saved after it is written after it."""
        folder = self.module_dir(name)

        def remove() -> None:
            self._update_records(name, None)
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(self._sockets_of(name), ignore_errors=True)

        self._writer.queue(f"remove {folder}", remove)

    def new_admin_dir(self, name: str, generation: int) -> Path:
        """An empty folder for the private sockets of one generation of a module."""
        path = self._sockets_of(name) / f"admin-{generation}"
        if len(os.fsencode(path / _SOCKET_NAME)) > _SOCKET_PATH_MAX:
            raise AgentError(
                f"{path / _SOCKET_NAME} is longer than a unix socket path may be ({_SOCKET_PATH_MAX} bytes):"
                " give the agent a shorter runtime_dir"
            )
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, mode=0o700)
        return path

    def clean_admin_dirs(self, name: str, *, keep: Collection[int]) -> None:
        """Remove the socket folders of generations that no longer run."""
        for folder in (self.module_dir(name), self._sockets_of(name)):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                match = _ADMIN.match(entry.name)
                if match and int(match.group(1)) not in keep:
                    shutil.rmtree(entry, ignore_errors=True)


@functools.lru_cache(maxsize=4096)
def _sockets_folder(root: Path, name: str, sockets: Path) -> Path:
    """A short folder for a module's sockets, named by a digest of its state folder (resolved) and name."""
    key = hashlib.sha256(f"{root.resolve()}\0{name}".encode()).hexdigest()[:16]
    return sockets / key


def _private_folder(path: Path) -> None:
    """Create `path` with mode 0700, or check that the existing one is ours and private."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(parents=True, mode=0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise AgentError(f"{path} must be a private folder of this user (mode 0700) for the modules' sockets")


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
