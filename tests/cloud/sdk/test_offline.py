"""Offline runs: real scripts in subprocesses with no EDGEWISE_* environment write ./edgewise-offline/."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from tests.support import wait_until


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWISE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(body))
    return path


def _points(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _only_folder(tmp_path: Path) -> Path:
    (folder,) = (tmp_path / "edgewise-offline").iterdir()
    return folder


def test_an_offline_run_writes_and_prints_every_point(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        from pathlib import Path
        from edgewise.cloud import Run

        run = Run.get_context()
        print("id", run.id, "experiment", run.experiment)
        for i in range(2000):
            run.log("loss", 1.0 / (i + 1))
        run.log("lr", 0.1, step=5, description="learning rate")
        run.log_list("sizes", [1, 2, 3])
        run.log_row("fold", k=1, acc=0.5)
        run.log_table("curve", {"x": [1, 2], "y": [3.0, 4.0]})
        Path("model.txt").write_text("weights")
        run.upload_file("outputs/model.txt", "model.txt")
        run.set_tags({"team": "vision"})
        with run.child_run("fold-1") as child:
            child.log("acc", 0.9)
        assert len(run.get_metrics()) == 2004
        run.child_run("dropped").log("z", 2.0)  # never completed nor kept: exit still finishes it
        import gc; gc.collect()
        """,
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    folder = _only_folder(tmp_path)
    assert done.stdout.count(str(folder / "metrics.jsonl")) == 1  # the path is printed once
    assert "loss = 1.0 (step 0)" in done.stdout
    assert f"id offline-{folder.name} experiment offline" in done.stdout
    points = _points(folder)
    loss = [p for p in points if p["name"] == "loss"]
    assert [p["step"] for p in loss] == list(range(2000))
    assert loss[-1]["value"] == 1.0 / 2000
    by_name = {p["name"]: p for p in points}
    assert by_name["lr"]["step"] == 5 and by_name["lr"]["payload"] == {"description": "learning rate"}
    assert by_name["sizes"]["kind"] == "list" and by_name["sizes"]["payload"] == [1, 2, 3]
    assert by_name["fold"]["payload"] == {"k": 1, "acc": 0.5}
    assert by_name["curve"]["payload"] == {"x": [1, 2], "y": [3.0, 4.0]}
    assert (folder / "files" / "outputs" / "model.txt").read_text() == "weights"
    assert json.loads((folder / "tags.json").read_text()) == {"team": "vision"}
    fold, dropped = sorted((folder / "children").iterdir())
    assert [p["value"] for p in _points(fold)] == [0.9]
    assert [p["value"] for p in _points(dropped)] == [2.0]
    for child in (fold, dropped):
        assert json.loads((child / "status.json").read_text())["status"] == "completed"


def test_points_logged_before_an_exception_are_kept(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        from edgewise.cloud import Run

        run = Run.get_context()
        child = run.child_run("trial")
        for i in range(5000):
            run.log("loss", float(i))
            child.log("x", float(i))
        raise RuntimeError("diverged")
        """,
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "diverged" in done.stderr
    folder = _only_folder(tmp_path)
    assert [p["value"] for p in _points(folder)] == [float(i) for i in range(5000)]
    (child,) = (folder / "children").iterdir()
    assert len(_points(child)) == 5000
    status = json.loads((child / "status.json").read_text())
    assert status["status"] == "failed" and "RuntimeError" in status["reason"]


def test_sigterm_delivers_the_points_then_ends_the_process_by_the_signal(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        import time
        from edgewise.cloud import Run

        run = Run.get_context()
        for i in range(3000):
            run.log("loss", float(i))
        print("logged", flush=True)
        time.sleep(600)
        """,
    )
    out = tmp_path / "stdout.txt"
    with out.open("wb") as stdout:
        process = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=_env(), stdout=stdout)
    try:
        wait_until(lambda: "logged" in out.read_text(), what="the script to log")
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == -signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert len(_points(_only_folder(tmp_path))) == 3000


def test_a_script_that_handles_sigterm_keeps_its_handler(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        import signal
        from edgewise.cloud import Run

        def mine(signum, frame):
            pass

        signal.signal(signal.SIGTERM, mine)
        Run.get_context()
        assert signal.getsignal(signal.SIGTERM) is mine
        """,
    )
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
