"""The workspace's manifest-signing key: created once with private permissions, the same after a restart, and a
damaged key file stops `edgewise up` with a message saying what to do."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from edgewise.cloud.signing_key import key_path, load_or_create_manifest_key
from edgewise.runtime.agent.signing import verify_document

from tests.cloud.devices.conftest import add_device
from tests.cloud.service import EDGEWISE, WorkspaceProcess
from tests.support import HOST


def test_created_once_with_private_permissions(tmp_path: Path) -> None:
    keys: list[str] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            keys.append(load_or_create_manifest_key(tmp_path).public_text)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    path = key_path(tmp_path)
    assert len(set(keys)) == 1  # concurrent first starts agree on one key
    assert len(path.read_bytes()) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left
    key = load_or_create_manifest_key(tmp_path)
    assert key.public_text == keys[0]
    verify_document(key.sign({"version": 1, "modules": {}}), key.public)
    assert "ed25519" not in repr(key) and str(path) in repr(key)


def test_the_key_survives_a_restart(workspace_factory: Callable[..., WorkspaceProcess], tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = workspace_factory("--broker", "embedded", data_dir=data)
    before = add_device(first, "survivor")
    first.stop()
    second = workspace_factory("--broker", "embedded", data_dir=data)
    assert second.client().manifest_key()["public_key"] == before.workspace_key_text
    assert second.client().get_device("survivor").id == "survivor"


def test_a_damaged_key_file_stops_the_service(tmp_path: Path) -> None:
    data = tmp_path / "data"
    key_path(data).parent.mkdir(parents=True)
    key_path(data).write_bytes(b"not a key")
    done = subprocess.run(
        [EDGEWISE, "up", "--data", str(data), "--host", HOST, "--port", "0", "--broker", "embedded"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "no_proxy": "*"},
    )
    assert done.returncode == 1
    assert str(key_path(data)) in done.stderr and "9 bytes" in done.stderr and "backup" in done.stderr
    assert "workspace live" not in done.stdout
