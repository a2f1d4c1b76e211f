"""Experiments and runs: creation on first use, lifecycle, child runs, tags, snapshots, pids."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from edgewise.cloud.errors import ConflictError, InvalidInputError, NotFoundError, UnsafePathError
from edgewise.cloud.store.records import FileEntry, GitInfo, RunStatus
from edgewise.cloud.store.sql import SqlStore

from tests.cloud.store.support import SNAPSHOT, SPEC, entry


def _run(store: SqlStore, experiment: str = "exp", **kwargs: Any) -> str:
    return store.create_run(experiment=experiment, spec=SPEC, snapshot=SNAPSHOT, git=None, **kwargs).id


def test_experiment_is_created_on_first_run(store: SqlStore) -> None:
    with pytest.raises(NotFoundError, match="no experiment named 'mnist'"):
        store.get_experiment("mnist")
    git = GitInfo(url="https://example.invalid/r.git", branch="main", commit="abc123", dirty=True)
    run = store.create_run(experiment="mnist", spec=SPEC, snapshot=SNAPSHOT, git=git, name="first", tags={"a": "1"})
    assert len(run.id) == 16 and all(c in "0123456789abcdef" for c in run.id)
    assert (run.experiment, run.status, run.name, run.spec, run.git) == ("mnist", RunStatus.QUEUED, "first", SPEC, git)
    assert run.tags == {"a": "1"} and run.metrics == {}
    assert store.get_run(run.id) == run
    experiment = store.get_experiment("mnist")
    assert experiment.run_count == 1
    assert store.get_or_create_experiment("mnist") == experiment
    assert store.get_snapshot(run.id) == sorted(SNAPSHOT, key=lambda e: e.path)


def test_get_or_create_experiment_is_race_free(store: SqlStore) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            results.append(store.get_or_create_experiment("shared").id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1 and len(results) == 8
    assert [e.name for e in store.list_experiments().items] == ["shared"]


def test_invalid_input_is_refused(store: SqlStore) -> None:
    with pytest.raises(InvalidInputError, match="invalid experiment name"):
        store.create_run(experiment="../x", spec=SPEC, snapshot=[], git=None)
    with pytest.raises(UnsafePathError):
        store.create_run(experiment="e", spec=SPEC, snapshot=[entry("../escape.py")], git=None)
    with pytest.raises(InvalidInputError, match="invalid digest"):
        store.create_run(experiment="e", spec=SPEC, snapshot=[FileEntry(path="a", digest="md5:x", size=1)], git=None)
    with pytest.raises(InvalidInputError, match="given twice"):
        store.create_run(experiment="e", spec=SPEC, snapshot=[entry("a"), entry("./a")], git=None)
    with pytest.raises(NotFoundError, match="no run 'nope'"):
        store.get_run("nope")


def test_run_lifecycle_and_terminal_states(store: SqlStore) -> None:
    run_id = _run(store)
    preparing = store.update_run_status(run_id, RunStatus.PREPARING)
    assert preparing.status is RunStatus.PREPARING and preparing.started_at is None
    running = store.update_run_status(run_id, RunStatus.RUNNING)
    assert running.started_at is not None and running.ended_at is None
    done = store.update_run_status(run_id, RunStatus.COMPLETED, exit_code=0)
    assert done.status is RunStatus.COMPLETED and done.exit_code == 0
    assert done.ended_at is not None and done.ended_at >= running.started_at
    assert done.started_at == running.started_at
    for status in RunStatus:
        with pytest.raises(ConflictError, match="already ended"):
            store.update_run_status(run_id, status)
    assert store.get_run(run_id) == done


def test_failed_run_keeps_reason_and_exit_code(store: SqlStore) -> None:
    run_id = _run(store)
    store.update_run_status(run_id, RunStatus.RUNNING)
    failed = store.update_run_status(run_id, RunStatus.FAILED, exit_code=3, reason="exit code 3")
    assert (failed.status, failed.exit_code, failed.status_reason) == (RunStatus.FAILED, 3, "exit code 3")


def test_cancel_a_queued_run(store: SqlStore) -> None:
    run_id = _run(store)
    canceled = store.update_run_status(run_id, RunStatus.CANCELED, reason="canceled by the user")
    assert canceled.started_at is None and canceled.ended_at is not None
    with pytest.raises(ConflictError):
        store.update_run_status(run_id, RunStatus.RUNNING)


def test_fail_unfinished_runs(store: SqlStore) -> None:
    queued, preparing, running, done = (_run(store) for _ in range(4))
    store.update_run_status(preparing, RunStatus.PREPARING)
    store.update_run_status(running, RunStatus.RUNNING)
    store.update_run_status(done, RunStatus.COMPLETED)
    child = store.create_run(
        experiment="exp", spec=None, snapshot=[], git=None, parent_id=running, status=RunStatus.RUNNING
    ).id
    failed = store.fail_unfinished_runs("the service stopped")
    assert failed == sorted([queued, preparing, running, child])
    for run_id in failed:
        run = store.get_run(run_id)
        assert run.status is RunStatus.FAILED and run.status_reason == "the service stopped"
        assert run.ended_at is not None
    assert store.get_run(done).status is RunStatus.COMPLETED
    assert store.fail_unfinished_runs("again") == []


def test_child_runs(store: SqlStore) -> None:
    parent = _run(store, "parent-exp")
    child = store.create_run(
        experiment="ignored",
        spec=None,
        snapshot=[],
        git=None,
        name="trial-1",
        parent_id=parent,
        status=RunStatus.RUNNING,
    )
    assert child.experiment == "parent-exp" and child.parent_id == parent and child.spec is None
    assert child.started_at == child.created_at
    with pytest.raises(NotFoundError):
        store.get_experiment("ignored")
    top = store.list_runs(experiment="parent-exp").items
    assert [r.id for r in top] == [parent]
    everything = store.list_runs(experiment="parent-exp", include_children=True).items
    assert {r.id for r in everything} == {parent, child.id}
    assert [r.id for r in store.list_runs(parent_id=parent).items] == [child.id]
    assert store.get_experiment("parent-exp").run_count == 1
    with pytest.raises(NotFoundError, match="parent"):
        store.create_run(experiment="x", spec=None, snapshot=[], git=None, parent_id="0000000000000000")


def test_tags_are_merged(store: SqlStore) -> None:
    run_id = _run(store, tags={"team": "vision", "stage": "dev"})
    run = store.set_run_tags(run_id, {"stage": "prod", "owner": "kim"})
    assert run.tags == {"team": "vision", "stage": "prod", "owner": "kim"}
    with pytest.raises(InvalidInputError):
        store.set_run_tags(run_id, {"": "empty key"})
    with pytest.raises(NotFoundError):
        store.set_run_tags("missing", {"a": "b"})


def test_run_pid(store: SqlStore) -> None:
    run_id = _run(store)
    assert store.get_run_pid(run_id) is None
    store.set_run_pid(run_id, 4242)
    assert store.get_run_pid(run_id) == 4242
    store.set_run_pid(run_id, None)
    assert store.get_run_pid(run_id) is None
    with pytest.raises(NotFoundError):
        store.set_run_pid("missing", 1)


def test_artifacts_upsert_and_prefix(store: SqlStore) -> None:
    run_id = _run(store)
    store.add_artifacts(run_id, [entry("outputs/model.onnx"), entry("outputs/metrics.json"), entry("logs/stdout.txt")])
    store.add_artifacts(run_id, [entry("outputs/model.onnx", "new content")])
    outputs = store.list_artifacts(run_id, "outputs/")
    assert [a.path for a in outputs] == ["outputs/metrics.json", "outputs/model.onnx"]
    model = store.get_artifact(run_id, "outputs/model.onnx")
    assert model.digest == entry("x", "new content").digest and model.size == len("new content")
    assert len(store.list_artifacts(run_id)) == 3
    assert store.list_artifacts(run_id, "outputs%") == []  # a prefix is text, not a pattern
    with pytest.raises(NotFoundError, match="has no file 'outputs/missing'"):
        store.get_artifact(run_id, "outputs/missing")
    with pytest.raises(UnsafePathError):
        store.add_artifacts(run_id, [entry("/etc/passwd")])
