"""Run the real `edgewise` console script in a subprocess, as a user's shell would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EDGEWISE = shutil.which("edgewise", path=str(Path(sys.executable).parent)) or "edgewise"
DEADLINE = 300.0  # seconds; a submitted run may build nothing but still has to start a Python


def edgewise(
    *args: str,
    env: Mapping[str, str],
    cwd: Path | None = None,
    stdin: str | None = None,
    expect: int | None = 0,
) -> subprocess.CompletedProcess[str]:
    """`edgewise ARGS...`; fails the test with both outputs when the exit code is not `expect` (None: any)."""
    process = subprocess.run(
        [EDGEWISE, *args],
        env={**env, "COLUMNS": "200", "NO_COLOR": "1"},
        cwd=cwd,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    if expect is not None and process.returncode != expect:
        raise AssertionError(
            f"`edgewise {' '.join(args)}` exited with {process.returncode}, expected {expect}\n"
            f"--- stdout ---\n{process.stdout}\n--- stderr ---\n{process.stderr}"
        )
    return process


def edgewise_json(*args: str, env: Mapping[str, str], cwd: Path | None = None) -> Any:
    """`edgewise ARGS... --output json`, parsed."""
    return json.loads(edgewise(*args, "--output", "json", env=env, cwd=cwd).stdout)


def env_without_credentials(data_dir: Path, url: str) -> dict[str, str]:
    """An environment where the CLI finds the URL but no token (empty data directory, no EDGEWISE_TOKEN)."""
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEWISE_TOKEN", "EDGEWISE_URL", "EDGEWISE_DATA")}
    return {**env, "EDGEWISE_URL": url, "EDGEWISE_DATA": str(data_dir), "HOME": str(data_dir), "no_proxy": "*"}
