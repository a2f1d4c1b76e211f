"""How the real `edgewise` command fails: one red line and exit 1 for workspace errors, 2 for usage errors."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.cloud.cli.cli import edgewise, env_without_credentials
from tests.cloud.service import WorkspaceProcess
from tests.support import HOST


def test_unknown_run_exits_1_with_the_service_message(workspace: WorkspaceProcess) -> None:
    result = edgewise("run", "show", "no-such-run", env=workspace.env, expect=1)
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "no-such-run" in line


def test_bad_pairs_are_usage_errors(workspace: WorkspaceProcess, tmp_path: Path) -> None:
    model_file = tmp_path / "m.bin"
    model_file.write_bytes(b"x")
    result = edgewise(
        "model", "register", "--name", "m", "--file", str(model_file), "--tag", "novalue", env=workspace.env, expect=2
    )
    assert "novalue" in result.stderr and "KEY=VALUE" in result.stderr


def test_without_a_token_the_service_answers_401(workspace: WorkspaceProcess, tmp_path: Path) -> None:
    env = env_without_credentials(tmp_path, workspace.url)
    result = edgewise("run", "list", env=env, expect=1)
    assert result.stderr.startswith("error: ")
    assert "token" in result.stderr.lower()
    wrong = edgewise("--token", "not-the-token", "experiment", "list", env=env, expect=1)
    assert wrong.stderr.startswith("error: ")


def test_url_option_overrides_the_environment(workspace: WorkspaceProcess) -> None:
    env = {**workspace.env, "EDGEWISE_URL": f"http://{HOST}:{_closed_port()}"}
    assert edgewise("--url", workspace.url, "experiment", "list", "--output", "json", env=env).stdout.startswith("[")


def test_unreachable_service_says_how_to_start_it(workspace: WorkspaceProcess) -> None:
    env = {**workspace.env, "EDGEWISE_URL": f"http://{HOST}:{_closed_port()}"}
    result = edgewise("experiment", "list", env=env, expect=1)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "edgewise up" in line


def test_version(workspace: WorkspaceProcess) -> None:
    from edgewise import __version__

    assert edgewise("--version", env=workspace.env).stdout.strip() == f"edgewise {__version__}"


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port
