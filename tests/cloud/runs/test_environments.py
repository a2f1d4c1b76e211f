"""Real virtual environments built from requirements files, with wheels made by the test (no network)."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from edgewise.cloud.errors import WorkspaceError
from edgewise.cloud.runs.environments import EnvironmentCache, normalise_requirements, requirements_hash

from tests.cloud.runs.wheels import build_wheel


def test_no_requirements_use_the_service_interpreter(tmp_path: Path) -> None:
    cache = EnvironmentCache(root=tmp_path / "envs")
    log = io.BytesIO()
    assert cache.prepare(None, log=log) == sys.executable
    assert cache.prepare("# only a comment\n\n", log=log) == sys.executable
    assert log.getvalue() == b"" and not (tmp_path / "envs").exists()


def test_normalisation_ignores_comments_and_blank_lines() -> None:
    assert normalise_requirements("  # deps\nnumpy>=1  # for arrays\n\n  pyyaml\n") == "numpy>=1\npyyaml"
    assert requirements_hash("numpy>=1\n") == requirements_hash("\n# x\nnumpy>=1   \n")
    assert requirements_hash("numpy>=1\n") != requirements_hash("numpy>=2\n")


def test_an_environment_is_built_once_and_sees_its_package_and_edgewise(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "tinypkg", "1.0", "VALUE = 'from tinypkg 1.0'\n")
    requirements = f"--no-index\n--find-links {wheels}\ntinypkg==1.0\n"
    cache = EnvironmentCache(root=tmp_path / "envs")
    results: list[str] = []
    logs = [io.BytesIO() for _ in range(3)]
    threads = [threading.Thread(target=lambda b=b: results.append(cache.prepare(requirements, log=b))) for b in logs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and len(set(results)) == 1
    python = results[0]
    assert python != sys.executable and Path(python).parent.parent == cache.path(requirements)
    combined = b"".join(log.getvalue() for log in logs)
    assert combined.count(b"building the run's environment") == 1
    assert combined.count(b"using the cached environment") == 2
    assert b"Successfully installed tinypkg-1.0" in combined
    # only the finished environment is left: no staging folders
    assert [p.name for p in (tmp_path / "envs").iterdir() if not p.name.endswith(".lock")] == [
        cache.path(requirements).name
    ]
    script = "import tinypkg, edgewise.cloud, yaml; print(tinypkg.VALUE, edgewise.cloud.__name__)"
    result = subprocess.run([python, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "from tinypkg 1.0 edgewise.cloud"
    # a second cache over the same folder (a restarted service) reuses it
    again = io.BytesIO()
    assert EnvironmentCache(root=tmp_path / "envs").prepare(requirements, log=again) == python
    assert b"using the cached environment" in again.getvalue()


def test_the_environment_packages_win_over_the_service_ones(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "yaml", "0.0.1", "SHADOW = True\n")  # a package the service also has
    cache = EnvironmentCache(root=tmp_path / "envs")
    python = cache.prepare(f"--no-index\n--find-links {wheels}\nyaml==0.0.1\n", log=io.BytesIO())
    result = subprocess.run([python, "-c", "import yaml; print(yaml.SHADOW)"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_a_failed_build_leaves_nothing_and_tells_why(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    cache = EnvironmentCache(root=tmp_path / "envs")
    log = io.BytesIO()
    requirements = f"--no-index\n--find-links {wheels}\nno-such-package-here==9.9\n"
    with pytest.raises(WorkspaceError, match=r"could not install the requirements(.|\n)*no-such-package-here"):
        cache.prepare(requirements, log=log)
    assert b"no-such-package-here" in log.getvalue()
    assert [p for p in (tmp_path / "envs").iterdir() if not p.name.endswith(".lock")] == []
