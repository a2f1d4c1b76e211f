"""The state directory: records and the manifest survive a round trip, and an earlier agent's files are read."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edgewise.runtime.agent.errors import AgentError
from edgewise.runtime.agent.model import (
    DesiredStatus,
    ModuleSettings,
    ModuleSpec,
    ModuleType,
    RestartPolicy,
    RuntimeStatus,
)
from edgewise.runtime.agent.signing import sign_document
from edgewise.runtime.agent.slotfile import SlotFile
from edgewise.runtime.agent.state import (
    ModuleRecord,
    Rollback,
    StateDir,
    default_runtime_dir,
    private_sockets_dir,
    read_record_documents,
    same_deployment,
    spec_document,
    spec_from_document,
)

KEY = Ed25519PrivateKey.generate()


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A short runtime folder: pytest's own temporary paths are too long for socket paths."""
    path = Path(tempfile.mkdtemp(prefix="ew-run-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


DIGEST = "sha256:" + "cd" * 32


def a_spec(**env: str) -> ModuleSpec:
    return ModuleSpec(
        name="iris",
        type=ModuleType.OCI,
        image=f"127.0.0.1:5000/models/iris@{DIGEST}",
        status=DesiredStatus.RUNNING,
        restart_policy=RestartPolicy.ON_FAILURE,
        env=MappingProxyType(env),
        settings=ModuleSettings(http_port=8000, grpc_port=8001, warmup=False, startup_timeout=12.5),
    )


def test_record_round_trip(tmp_path: Path) -> None:
    state = StateDir(root=tmp_path / "state")
    record = ModuleRecord(
        name="iris",
        generation=3,
        pid=1234,
        start_ticks=99887,
        started_at=1_800_000_000.5,
        image=a_spec().image,
        digest=DIGEST,
        spec=spec_document(a_spec(OMP_NUM_THREADS="1")),
        manifest_version=7,
        restart_count=2,
        last_start=1_800_000_000.5,
        last_exit=1_799_999_999.0,
        exit_code=-9,
        status=RuntimeStatus.RUNNING,
        description="running",
        rollback=Rollback(from_digest="sha256:" + "ee" * 32, reason="warm-up failed", manifest_version=7),
    )
    state.save_record(record)
    assert state.load_records() == {"iris": record}
    assert state.data_dir("iris").is_dir()


def test_unreadable_record_is_skipped(tmp_path: Path) -> None:
    state = StateDir(root=tmp_path)
    good = ModuleRecord(name="good").to_json()
    SlotFile(tmp_path / "records").write(json.dumps({"modules": {"good": good, "bad": {"generation": 1}}}).encode())
    assert list(state.load_records()) == ["good"]


def test_an_earlier_agents_files_are_read_and_replaced_at_the_first_save(tmp_path: Path) -> None:
    """Before the slots, the manifest was manifest.json and each record modules/{name}/record.json."""
    payload = json.dumps(sign_document({"deviceId": "cam-7", "version": 4, "modules": {}}, KEY)).encode()
    (tmp_path / "manifest.json").write_bytes(payload)
    for name, generation in (("iris", 3), ("wine", 5)):
        (tmp_path / "modules" / name).mkdir(parents=True)
        (tmp_path / "modules" / name / "record.json").write_text(
            json.dumps(ModuleRecord(name=name, generation=generation).to_json())
        )
    (tmp_path / "modules" / "bad").mkdir()
    (tmp_path / "modules" / "bad" / "record.json").write_text("{not json")
    state = StateDir(root=tmp_path)
    manifest = state.load_manifest(device_id="cam-7", public_key=KEY.public_key())
    assert manifest is not None and manifest.version == 4
    assert {name: r.generation for name, r in state.load_records().items()} == {"iris": 3, "wine": 5}

    state.save_record(ModuleRecord(name="iris", generation=4))
    assert {name: r.generation for name, r in state.load_records().items()} == {"iris": 4, "wine": 5}
    assert not list(tmp_path.glob("modules/*/record.json"))
    state.save_manifest(b"{}")
    assert state.saved_manifest() == b"{}" and not (tmp_path / "manifest.json").exists()


def test_removing_a_module_forgets_its_record_only(tmp_path: Path) -> None:
    state = StateDir(root=tmp_path)
    state.save_record(ModuleRecord(name="iris", generation=1))
    state.save_record(ModuleRecord(name="wine", generation=2))
    state.delete_module("iris")
    assert list(read_record_documents(tmp_path)) == ["wine"]
    assert not state.module_dir("iris").exists() and state.data_dir("wine").is_dir()


def test_spec_document_round_trip_and_comparison() -> None:
    spec = a_spec(A="1")
    document = spec_document(spec)
    assert spec_from_document("iris", json.loads(json.dumps(document))) == spec
    stopped = spec_document(ModuleSpec(**{**spec.__dict__, "status": DesiredStatus.STOPPED}))
    assert same_deployment(document, stopped)  # only the desired status differs
    assert not same_deployment(document, spec_document(a_spec(A="2")))
    assert not same_deployment(None, document)


def test_manifest_is_kept_verbatim_and_verified_again(tmp_path: Path) -> None:
    state = StateDir(root=tmp_path)
    assert state.load_manifest(device_id="cam-7", public_key=KEY.public_key()) is None
    payload = json.dumps(sign_document({"deviceId": "cam-7", "version": 5, "modules": {}}, KEY), indent=1).encode()
    state.save_manifest(payload)
    assert state.saved_manifest() == payload
    manifest = state.load_manifest(device_id="cam-7", public_key=KEY.public_key())
    assert manifest is not None and manifest.version == 5


def test_a_saved_manifest_that_no_longer_verifies_is_set_aside(tmp_path: Path) -> None:
    state = StateDir(root=tmp_path)
    other = Ed25519PrivateKey.generate()
    state.save_manifest(json.dumps(sign_document({"deviceId": "cam-7", "version": 5}, other)).encode())
    assert state.load_manifest(device_id="cam-7", public_key=KEY.public_key()) is None
    assert state.saved_manifest() is None
    assert (tmp_path / "manifest.json.refused").exists()


def test_admin_dirs_of_past_generations_are_cleaned(tmp_path: Path, run_dir: Path) -> None:
    state = StateDir(root=tmp_path / "state", runtime_dir=run_dir)
    for generation in (1, 2, 3):
        state.new_admin_dir("iris", generation)
    (state.admin_dir("iris", 3) / "http.sock").write_text("")
    state.clean_admin_dirs("iris", keep={3})
    assert sorted(p.name for p in state.admin_dir("iris", 3).parent.iterdir()) == ["admin-3"]
    fresh = state.new_admin_dir("iris", 3)
    assert list(fresh.iterdir()) == []  # a new generation starts with an empty folder


def test_sockets_live_in_a_private_folder_of_the_runtime_dir(tmp_path: Path, run_dir: Path) -> None:
    state = StateDir(root=tmp_path / "state", runtime_dir=run_dir)
    admin = state.new_admin_dir("scale", 3)
    assert admin.is_relative_to(state.sockets_dir)
    assert state.sockets_dir == run_dir / f"edgewise-agent-{os.getuid()}"
    assert (state.sockets_dir.stat().st_mode & 0o777) == 0o700
    assert not admin.is_relative_to(tmp_path / "state")  # a module start creates no file for them in the state
    assert state.admin_dir("scale", 3) == admin  # the same folder when asked again (adoption after a restart)
    other = StateDir(root=tmp_path / "other", runtime_dir=run_dir)
    assert other.new_admin_dir("scale", 3) != admin  # another state directory, another folder
    state.delete_module("scale")
    assert not admin.exists()


def test_an_earlier_agents_socket_folder_is_found_and_cleaned(tmp_path: Path, run_dir: Path) -> None:
    state = StateDir(root=tmp_path / "state", runtime_dir=run_dir)
    earlier = state.module_dir("iris") / "admin-2"  # where agents before the runtime folder put them
    earlier.mkdir(parents=True)
    assert state.admin_dir("iris", 2) == earlier  # a module such an agent started is adopted with its sockets
    assert state.new_admin_dir("iris", 3).is_relative_to(state.sockets_dir)
    state.clean_admin_dirs("iris", keep={3})
    assert not earlier.exists()


def test_someone_elses_sockets_folder_is_refused(tmp_path: Path, run_dir: Path) -> None:
    shared = run_dir / f"edgewise-agent-{os.getuid()}"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(AgentError, match="private folder"):
        StateDir(root=tmp_path / "state", runtime_dir=run_dir)
    with pytest.raises(AgentError, match="private folder"):
        private_sockets_dir(run_dir)


def test_a_runtime_dir_too_deep_for_socket_paths_is_named(tmp_path: Path) -> None:
    state = StateDir(root=tmp_path / "state", runtime_dir=tmp_path.joinpath(*["a-rather-long-folder-name"] * 4))
    with pytest.raises(AgentError, match="shorter runtime_dir"):
        state.new_admin_dir("scale", 1)


def test_the_default_runtime_dir_follows_the_session(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_runtime_dir() == tmp_path
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    expected = Path("/run") if os.geteuid() == 0 and os.access("/run", os.W_OK | os.X_OK) else None
    assert default_runtime_dir() == (expected or Path(tempfile.gettempdir()))


def test_delete_module_removes_everything(tmp_path: Path) -> None:
    state = StateDir(root=tmp_path)
    state.save_record(ModuleRecord(name="iris"))
    state.sample_file("iris").write_text("{}\n")
    state.delete_module("iris")
    assert not state.module_dir("iris").exists()
    assert state.load_records() == {}


def test_a_runtime_dir_that_cannot_hold_folders_is_named(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "run"
    not_a_folder.write_text("")
    with pytest.raises(AgentError, match=r"sockets folder.*set runtime_dir"):
        StateDir(root=tmp_path / "state", runtime_dir=not_a_folder)
