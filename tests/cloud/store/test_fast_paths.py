"""The store's batched paths: metric items across multi-row INSERT chunks, registration from a run's files in
one transaction, and SQLite checkpoints on the background thread."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from edgewise.cloud.errors import InvalidInputError, NotFoundError
from edgewise.cloud.store.records import FileEntry, MetricKind, MetricPoint
from edgewise.cloud.store.sql import SqlStore

from tests.cloud.store.support import SNAPSHOT, SPEC, entry


def _run(store: SqlStore) -> str:
    return store.create_run(experiment="fast", spec=SPEC, snapshot=SNAPSHOT, git=None).id


def test_metric_items_keep_order_across_insert_chunks(store: SqlStore) -> None:
    run_id = _run(store)
    items = [("loss", "scalar", 1.0 / (i + 1), i, 10.0 + i, None) for i in range(1203)]
    items.insert(700, ("curve", "list", None, None, 5.0, [1, 2.5]))
    items.append(("acc", MetricKind.SCALAR, 1, None, 3, None))  # ints are stored as numbers
    store.log_metric_items(run_id, items)
    stored = store.get_metrics(run_id)
    assert [(p.name, p.value, p.step) for p in stored] == [
        (n, None if v is None else float(v), s) for n, _, v, s, _, _ in items
    ]
    assert stored[700] == MetricPoint(name="curve", timestamp=5.0, kind=MetricKind.LIST, payload=[1, 2.5])
    assert store.get_run(run_id).metrics == {"loss": 1.0 / 1203, "acc": 1.0}


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (("loss", "scalar", "high", 1, 1.0, None), "value"),
        (("loss", "scalar", 1.0, 1.5, 1.0, None), "step"),
        (("loss", "histogram", 1.0, 1, 1.0, None), "kind"),
        (("", "scalar", 1.0, 1, 1.0, None), "name"),
        ((["loss"], "scalar", 1.0, 1, 1.0, None), "name"),
        (("loss", "scalar", float("nan"), 1, 1.0, None), "NaN"),
    ],
)
def test_a_bad_item_names_its_index_and_stores_nothing(store: SqlStore, bad: tuple[object, ...], words: str) -> None:
    run_id = _run(store)
    good = ("loss", "scalar", 0.5, 0, 1.0, None)
    with pytest.raises(InvalidInputError) as raised:
        store.log_metric_items(run_id, [good, good, bad])  # type: ignore[list-item]
    assert "points[2]" in str(raised.value) and words in str(raised.value)
    assert store.get_metrics(run_id) == []


def _describe(files: list[FileEntry]) -> tuple[str, str | None]:
    return ("onnx", "pytorch") if len(files) == 1 else ("directory", None)


def test_register_a_runs_file_or_folder_in_one_call(store: SqlStore) -> None:
    run_id = _run(store)
    files = [
        entry("outputs/model.onnx"),
        entry("outputs/big/a.bin"),
        entry("outputs/big/b.bin"),
        entry("outputs/bigger"),
        entry("outputs/BIG/c.bin"),
        entry("outputs/b_g/d.bin"),
        entry("outputs/big-x"),
    ]
    store.add_artifacts(run_id, files)
    one = store.register_run_model(
        name="m", run_id=run_id, path="outputs/model.onnx", describe=_describe, tags={"s": "p"}
    )
    assert (one.version, one.format, one.framework, one.experiment, one.tags) == (
        1,
        "onnx",
        "pytorch",
        "fast",
        {"s": "p"},
    )
    assert [f.path for f in one.files] == ["model.onnx"]
    folder = store.register_run_model(name="m", run_id=run_id, path="outputs/big", describe=_describe)
    assert (folder.version, folder.format) == (2, "directory")
    assert [f.path for f in folder.files] == ["big/a.bin", "big/b.bin"]  # not bigger, BIG/, b_g/ or big-x
    wildcard = store.register_run_model(name="m", run_id=run_id, path="outputs/b_g", describe=_describe)
    assert [f.path for f in wildcard.files] == ["b_g/d.bin"]
    assert store.get_model("m", 2) == folder
    assert store.get_model("m", 3) == wildcard
    assert store.get_model("m", 1) == one


def test_register_from_a_run_says_what_is_missing(store: SqlStore) -> None:
    run_id = _run(store)
    with pytest.raises(NotFoundError, match="no run 'nope'"):
        store.register_run_model(name="m", run_id="nope", path="outputs/model.onnx", describe=_describe)
    with pytest.raises(NotFoundError, match="it has no outputs"):
        store.register_run_model(name="m", run_id=run_id, path="outputs/model.onnx", describe=_describe)
    store.add_artifacts(run_id, [entry("outputs/model.pkl"), entry("logs/stdout.txt")])
    with pytest.raises(NotFoundError, match=r"its outputs are: outputs/model\.pkl$"):
        store.register_run_model(name="m", run_id=run_id, path="outputs/model.onnx", describe=_describe)
    with pytest.raises(NotFoundError):
        store.get_model("m")  # nothing was half-registered


def test_sqlite_checkpoints_run_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "workspace.db"
    store = SqlStore.open(f"sqlite:///{path}")
    try:
        with store._db.read() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        before = path.stat().st_size
        run_id = _run(store)
        store.log_metrics(
            run_id, [MetricPoint(name="loss", value=float(i), step=i, timestamp=1.0) for i in range(20_000)]
        )
        deadline = time.monotonic() + 30
        while path.stat().st_size <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_size > before, "the points never reached the database file"
        with sqlite3.connect(path) as other:
            assert other.execute("SELECT count(*) FROM metrics").fetchone() == (20_000,)
    finally:
        store.close()
