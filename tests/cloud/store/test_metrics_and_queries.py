"""Metrics (order, latest values, non-scalar payloads) and run queries (filters, order-by, pagination)."""

from __future__ import annotations

from typing import Any

import pytest
from edgewise.cloud.errors import InvalidInputError, NotFoundError
from edgewise.cloud.store.records import MetricKind, MetricPoint, RunStatus
from edgewise.cloud.store.sql import SqlStore

from tests.cloud.store.support import SNAPSHOT, SPEC


def _run(store: SqlStore, experiment: str = "exp", **kwargs: Any) -> str:
    return store.create_run(experiment=experiment, spec=SPEC, snapshot=SNAPSHOT, git=None, **kwargs).id


def _scalar(name: str, value: float, *, step: int | None = None, timestamp: float = 1000.0) -> MetricPoint:
    return MetricPoint(name=name, value=value, step=step, timestamp=timestamp)


def test_metrics_keep_logging_order(store: SqlStore) -> None:
    run_id = _run(store)
    first = [_scalar("loss", 1.0 / (i + 1), step=i) for i in range(500)] + [_scalar("acc", 0.5)]
    second = [_scalar("loss", 9.0, step=3), _scalar("acc", 0.75)]
    store.log_metrics(run_id, first)
    store.log_metrics(run_id, second)
    store.log_metrics(run_id, [])
    assert store.get_metrics(run_id) == first + second
    assert [p.value for p in store.get_metrics(run_id, "acc")] == [0.5, 0.75]
    assert store.get_metrics(run_id, "unknown") == []
    with pytest.raises(NotFoundError):
        store.get_metrics("missing")


def test_latest_value_is_highest_step_then_latest_time(store: SqlStore) -> None:
    run_id = _run(store)
    store.log_metrics(run_id, [_scalar("loss", 0.1, step=10), _scalar("loss", 0.5, step=2)])
    assert store.get_run(run_id).metrics == {"loss": 0.1}
    store.log_metrics(run_id, [_scalar("loss", 0.7, step=9, timestamp=5000.0)])  # later in time, lower step
    assert store.get_run(run_id).metrics == {"loss": 0.1}
    store.log_metrics(run_id, [_scalar("loss", 0.05, step=10, timestamp=1001.0)])  # same step, later
    assert store.get_run(run_id).metrics == {"loss": 0.05}
    store.log_metrics(run_id, [_scalar("loss", 0.04, step=10, timestamp=1001.0)])  # a tie: the last logged wins
    assert store.get_run(run_id).metrics == {"loss": 0.04}
    store.log_metrics(run_id, [_scalar("acc", 0.2, timestamp=3.0), _scalar("acc", 0.3, timestamp=2.0)])
    assert store.get_run(run_id).metrics == {"loss": 0.04, "acc": 0.2}
    store.log_metrics(run_id, [_scalar("acc", 0.9, timestamp=3.0)])
    assert store.get_run(run_id).metrics["acc"] == 0.9


def test_non_scalar_metrics_keep_their_payload(store: SqlStore) -> None:
    run_id = _run(store)
    table = {"columns": ["epoch", "loss"], "rows": [[1, 0.5], [2, 0.25]]}
    image = {"path": "plots/roc.png", "digest": "sha256:" + "c" * 64}
    points = [
        MetricPoint(name="curve", timestamp=1.0, kind=MetricKind.LIST, payload=[1, 2.5, 3]),
        MetricPoint(name="summary", timestamp=1.0, kind=MetricKind.ROW, payload={"a": 1, "b": "x"}),
        MetricPoint(name="history", timestamp=1.0, kind=MetricKind.TABLE, payload=table),
        MetricPoint(name="roc", timestamp=1.0, kind=MetricKind.IMAGE, payload=image),
    ]
    store.log_metrics(run_id, points)
    assert store.get_metrics(run_id) == points
    assert store.get_run(run_id).metrics == {}  # only scalars have a latest value


def test_bad_points_are_refused_whole(store: SqlStore) -> None:
    run_id = _run(store)
    bad = [
        MetricPoint(name="loss", timestamp=1.0, value=None),
        MetricPoint(name="loss", timestamp=1.0, value=float("nan")),
        MetricPoint(name="", timestamp=1.0, value=1.0),
        MetricPoint(name="loss", timestamp=1.0, value=1.0, step="3"),  # type: ignore[arg-type]
        MetricPoint(name="t", timestamp=1.0, kind=MetricKind.ROW, payload={"x": object()}),
    ]
    for point in bad:
        with pytest.raises(InvalidInputError):
            store.log_metrics(run_id, [_scalar("ok", 1.0), point])
    assert store.get_metrics(run_id) == []
    with pytest.raises(NotFoundError):
        store.log_metrics("missing", [_scalar("loss", 1.0)])


@pytest.fixture
def runs(store: SqlStore) -> dict[str, str]:
    """Four runs: a, b and c with accuracies, d without; tags and statuses vary."""
    ids = {}
    for name, accuracy, team, status in (
        ("a", 0.9, "vision", RunStatus.COMPLETED),
        ("b", 0.7, "speech", RunStatus.FAILED),
        ("c", 0.95, "vision", RunStatus.RUNNING),
        ("d", None, "speech", RunStatus.QUEUED),
    ):
        run_id = _run(store, "queries", name=f"run-{name}", tags={"team": team})
        if status is not RunStatus.QUEUED:
            store.update_run_status(run_id, RunStatus.RUNNING)
        if status.terminal:
            store.update_run_status(run_id, status)
        if accuracy is not None:
            store.log_metrics(run_id, [_scalar("accuracy", accuracy, step=1), _scalar("loss", 1 - accuracy, step=1)])
        ids[name] = run_id
    _run(store, "elsewhere", name="run-z")
    return ids


def _names(store: SqlStore, **kwargs: Any) -> list[str | None]:
    return [r.name for r in store.list_runs(experiment="queries", **kwargs).items]


def test_filters(store: SqlStore, runs: dict[str, str]) -> None:
    assert _names(store, filter="metrics.accuracy > 0.8", order_by="name") == ["run-a", "run-c"]
    assert _names(store, filter="metrics.accuracy >= 0.9 and tags.team = 'vision'", order_by="name") == [
        "run-a",
        "run-c",
    ]
    assert _names(store, filter="metrics.accuracy != 0.9", order_by="name") == ["run-b", "run-c"]
    assert _names(store, filter="tags.team = 'speech' AND status = 'queued'") == ["run-d"]
    assert _names(store, filter="status != 'queued' AND metrics.loss < 0.2", order_by="name") == ["run-a", "run-c"]
    assert _names(store, filter="name = 'run-b'") == ["run-b"]
    assert _names(store, filter="metrics.missing > 0") == []
    assert _names(store, filter="tags.nobody = 'x'") == []
    everywhere = store.list_runs(filter="name >= 'run-d'", order_by="name").items
    assert [r.name for r in everywhere] == ["run-d", "run-z"]


def test_order_by(store: SqlStore, runs: dict[str, str]) -> None:
    assert _names(store, order_by="metrics.accuracy") == ["run-c", "run-a", "run-b", "run-d"]  # desc by default
    assert _names(store, order_by="metrics.accuracy asc") == ["run-b", "run-a", "run-c", "run-d"]  # missing last
    assert _names(store, order_by="name desc") == ["run-d", "run-c", "run-b", "run-a"]
    assert _names(store) == ["run-d", "run-c", "run-b", "run-a"]  # newest first
    assert _names(store, order_by="created_at asc") == ["run-a", "run-b", "run-c", "run-d"]
    assert _names(store, order_by="status") == ["run-a", "run-b", "run-d", "run-c"]  # asc by default
    assert _names(store, order_by="tags.team, name desc") == ["run-d", "run-b", "run-c", "run-a"]
    assert _names(store, order_by="ended_at asc, name asc") == ["run-a", "run-b", "run-c", "run-d"]
    durations = _names(store, order_by="duration desc")
    assert durations[-1] == "run-d"  # never started
    assert sorted(str(d) for d in durations) == ["run-a", "run-b", "run-c", "run-d"]


def test_malformed_queries_name_the_bad_part(store: SqlStore, runs: dict[str, str]) -> None:
    with pytest.raises(InvalidInputError, match="'banana"):
        store.list_runs(filter="metrics.accuracy > banana")
    with pytest.raises(InvalidInputError, match="AND or the end"):
        store.list_runs(filter="metrics.accuracy > 0.5 OR name = 'x'")
    with pytest.raises(InvalidInputError, match="'sideways'"):
        store.list_runs(order_by="name sideways")


def test_pagination(store: SqlStore, runs: dict[str, str]) -> None:
    seen: list[str | None] = []
    token = None
    pages = 0
    while True:
        page = store.list_runs(experiment="queries", order_by="name", page_size=3, page_token=token)
        seen.extend(r.name for r in page.items)
        pages += 1
        token = page.next_page_token
        if token is None:
            break
    assert (seen, pages) == (["run-a", "run-b", "run-c", "run-d"], 2)
    last = store.list_runs(experiment="queries", page_size=4)
    assert len(last.items) == 4 and last.next_page_token is None
    for bad in (0, 1001):
        with pytest.raises(InvalidInputError, match="page_size"):
            store.list_runs(page_size=bad)
    with pytest.raises(InvalidInputError, match="page_token"):
        store.list_runs(page_token="not-a-token!")
    experiments = store.list_experiments(page_size=1)
    assert [e.name for e in experiments.items] == ["elsewhere"]
    rest = store.list_experiments(page_size=1, page_token=experiments.next_page_token)
    assert [(e.name, e.run_count) for e in rest.items] == [("queries", 4)] and rest.next_page_token is None
