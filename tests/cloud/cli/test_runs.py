"""`edgewise run ...` against a real workspace service, through the real console script."""

from __future__ import annotations

from pathlib import Path

from tests.cloud.cli.cli import edgewise, edgewise_json
from tests.cloud.cli.conftest import Trained, unique
from tests.cloud.service import WorkspaceProcess


def test_submit_wait_streams_logs_and_exits_0_when_completed(trained: Trained) -> None:
    for run in trained.runs:
        assert "training done with" in run.stdout
        assert "a warning line" in run.stderr
        assert "completed" in run.stderr


def test_submit_wait_of_a_failing_script_exits_1_with_the_reason(workspace: WorkspaceProcess, project: Path) -> None:
    result = edgewise(
        "run", "submit", "--experiment", unique("cli-fail"), "--source", str(project), "--script", "fail.py", "--wait",
        env=workspace.env, expect=1,
    )  # fmt: skip
    run_id = result.stdout.splitlines()[0].strip()
    assert "about to fail" in result.stderr
    assert "failed" in result.stderr and "exit code 3" in result.stderr
    shown = edgewise_json("run", "show", run_id, env=workspace.env)
    assert shown["status"] == "failed" and shown["exit_code"] == 3


def test_submit_takes_tags_and_environment(workspace: WorkspaceProcess, project: Path, tmp_path: Path) -> None:
    (project / "env.py").write_text("import os\nprint('GREETING is', os.environ['GREETING'])\n")
    experiment = unique("cli-env")
    result = edgewise(
        "run", "submit", "--experiment", experiment, "--source", str(project), "--script", "env.py",
        "--name", "hello", "--tag", "team=vision", "--env", "GREETING=hi there", "--wait",
        env=workspace.env,
    )  # fmt: skip
    assert "GREETING is hi there" in result.stdout
    (run,) = edgewise_json("run", "list", "--experiment", experiment, env=workspace.env)
    assert run["name"] == "hello" and run["tags"] == {"team": "vision"}
    assert run["spec"]["environment"] == {"GREETING": "hi there"}


def test_run_list_filters_orders_and_prints_json(workspace: WorkspaceProcess, trained: Trained) -> None:
    low, high = trained.runs
    best = edgewise_json(
        "run", "list", "--experiment", trained.experiment, "--filter", "metrics.accuracy > 0.8", env=workspace.env
    )
    assert [r["id"] for r in best] == [high.id]
    assert best[0]["metrics"]["accuracy"] == 0.9
    ascending = edgewise_json(
        "run", "list", "--experiment", trained.experiment, "--order-by", "metrics.accuracy asc", env=workspace.env
    )
    assert [r["id"] for r in ascending] == [low.id, high.id]
    limited = edgewise_json(
        "run", "list", "--experiment", trained.experiment, "--order-by", "metrics.accuracy desc", "--limit", "1",
        env=workspace.env,
    )  # fmt: skip
    assert [r["id"] for r in limited] == [high.id]
    table = edgewise("run", "list", "--experiment", trained.experiment, env=workspace.env).stdout
    assert low.id in table and high.id in table and "accuracy" in table and "completed" in table


def test_bad_filter_exits_1_naming_the_problem(workspace: WorkspaceProcess, trained: Trained) -> None:
    result = edgewise("run", "list", "--filter", "metrics.accuracy >>> high", env=workspace.env, expect=1)
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_run_show_metrics_and_logs(workspace: WorkspaceProcess, trained: Trained) -> None:
    run = trained.runs[1]
    shown = edgewise("run", "show", run.id, env=workspace.env).stdout
    for expected in ("completed", "train.py --accuracy 0.9", "outputs/model.pkl", "accuracy", "acc=0.9"):
        assert expected in shown
    as_json = edgewise_json("run", "show", run.id, env=workspace.env)
    assert as_json["id"] == run.id and as_json["experiment"] == trained.experiment
    assert as_json["exit_code"] == 0 and as_json["spec"]["arguments"] == ["--accuracy", "0.9"]

    loss = edgewise_json("run", "metrics", run.id, "--name", "loss", env=workspace.env)
    assert [(p["step"], p["value"]) for p in loss] == [(0, 1.0), (1, 0.5), (2, 1.0 / 3)]
    table = edgewise("run", "metrics", run.id, env=workspace.env).stdout
    assert "loss" in table and "accuracy" in table

    both = edgewise("run", "logs", run.id, env=workspace.env)
    assert "training done with 0.9" in both.stdout and "a warning line" in both.stderr
    only_out = edgewise("run", "logs", run.id, "--stream", "stdout", env=workspace.env)
    assert "training done" in only_out.stdout and "a warning line" not in only_out.stderr
    followed = edgewise("run", "logs", run.id, "-f", "--stream", "stderr", env=workspace.env)
    assert "a warning line" in followed.stderr and "training done" not in followed.stdout


def test_run_download_a_file_and_a_folder(workspace: WorkspaceProcess, trained: Trained, tmp_path: Path) -> None:
    run = trained.runs[0]
    edgewise("run", "download", run.id, "outputs/notes.txt", "--to", str(tmp_path / "one"), env=workspace.env)
    assert (tmp_path / "one" / "notes.txt").read_text() == "trained\n"
    edgewise("run", "download", run.id, "outputs", "--to", str(tmp_path / "all"), env=workspace.env)
    assert sorted(p.name for p in (tmp_path / "all" / "outputs").iterdir()) == ["model.pkl", "notes.txt"]
    missing = edgewise(
        "run", "download", run.id, "outputs/nope.bin", "--to", str(tmp_path), env=workspace.env, expect=1
    )
    assert missing.stderr.startswith("error: ") and "nope.bin" in missing.stderr


def test_cancel_a_running_run(workspace: WorkspaceProcess, project: Path) -> None:
    experiment = unique("cli-cancel")
    submitted = edgewise(
        "run", "submit", "--experiment", experiment, "--source", str(project), "--script", "sleep.py",
        env=workspace.env,
    )  # fmt: skip
    run_id = submitted.stdout.strip()
    assert edgewise("run", "cancel", run_id, env=workspace.env).stdout.strip() == f"run {run_id} canceled"
    assert edgewise_json("run", "show", run_id, env=workspace.env)["status"] == "canceled"
    again = edgewise("run", "cancel", run_id, env=workspace.env, expect=1)
    assert again.stderr.startswith("error: ")


def test_experiment_list(workspace: WorkspaceProcess, trained: Trained) -> None:
    experiments = {e["name"]: e for e in edgewise_json("experiment", "list", env=workspace.env)}
    assert experiments[trained.experiment]["run_count"] == 2
    assert trained.experiment in edgewise("experiment", "list", env=workspace.env).stdout
