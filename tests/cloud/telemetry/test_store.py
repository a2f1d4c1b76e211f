"""The telemetry part of the store on real databases: records stored once per sequence number, the workspace's
counters beside the device's reported state, queries and the fleet summary."""

from __future__ import annotations

import time
from typing import Any

import pytest
from edgewise.cloud.errors import InvalidInputError, NotFoundError
from edgewise.cloud.ingest.records import INGEST_KEY
from edgewise.cloud.store.sql import SqlStore

from tests.cloud.store.conftest import db_url, store

__all__ = ["db_url", "store"]


def health(seq: int, ts: float, cpu: float = 12.5, disk_free: int = 10_000) -> dict[str, Any]:
    data = {"cpuPercent": cpu, "memoryUsedBytes": 100, "memoryTotalBytes": 1000, "diskFreeBytes": disk_free,
            "diskTotalBytes": 50_000, "load1m": 0.5}  # fmt: skip
    return {"seq": seq, "ts": ts, "kind": "health", "module": None, "data": data}


def scoring(seq: int, ts: float, module: str, requests: int, errors: int, rate: float) -> dict[str, Any]:
    model = {"name": "iris", "version": "1", "requests": requests, "errors": errors, "requestsPerSecond": rate}
    return {"seq": seq, "ts": ts, "kind": "scoring", "module": module, "data": {"available": True, "models": [model]}}


def test_records_are_stored_once_per_sequence_number(store: SqlStore) -> None:
    store.create_device("cam")
    t0 = 1_800_000_000.0
    first = store.insert_telemetry("cam", [health(1, t0), health(2, t0 + 1)], dropped={"ttl": 0, "maxBytes": 0})
    assert first is not None and (first.inserted, first.duplicates) == (2, 0)
    again = store.insert_telemetry("cam", [health(2, t0 + 1), health(3, t0 + 2), health(3, t0 + 2)])
    assert again is not None and (again.inserted, again.duplicates) == (1, 2)
    late = store.insert_telemetry("cam", [health(5, t0 + 4), health(4, t0 + 3)], dropped={"ttl": 2, "maxBytes": 1})
    assert late is not None and late.inserted == 2
    assert [r.seq for r in store.list_telemetry("cam")] == [1, 2, 3, 4, 5]
    counters = store.get_device("cam").reported[INGEST_KEY]  # type: ignore[index]
    assert counters["records"] == 5 and counters["duplicates"] == 2 and counters["lastSequence"] == 5
    assert counters["dropped"] == {"ttl": 2, "maxBytes": 1}
    assert store.insert_telemetry("nobody", [health(1, t0)]) is None


def test_reported_documents_keep_the_workspace_counters(store: SqlStore) -> None:
    store.create_device("cam")
    store.insert_telemetry("cam", [health(1, 1.0)])
    forged = {"lastDesiredVersion": 3, INGEST_KEY: {"records": 999}}
    assert store.record_reported("cam", forged, seen_at=123.0)
    device = store.get_device("cam")
    assert device.reported is not None and device.reported["lastDesiredVersion"] == 3
    assert device.reported[INGEST_KEY]["records"] == 1
    assert device.last_seen_at == 123.0
    assert store.record_reported("cam", {"lastDesiredVersion": 4}, seen_at=None)
    assert store.get_device("cam").last_seen_at == 123.0
    assert not store.record_reported("nobody", {}, seen_at=None)


def test_queries_filter_by_time_kind_module_and_name(store: SqlStore) -> None:
    store.create_device("cam")
    t0 = 1_800_000_000.0
    records = [
        health(1, t0),
        scoring(2, t0 + 1, "iris", 10, 1, 2.0),
        health(3, t0 + 2),
        scoring(4, t0 + 3, "b", 4, 0, 1.0),
    ]
    store.insert_telemetry("cam", records)
    assert [r.seq for r in store.list_telemetry("cam", kind="health")] == [1, 3]
    assert [r.seq for r in store.list_telemetry("cam", module="iris")] == [2]
    assert [r.seq for r in store.list_telemetry("cam", since=t0 + 1, until=t0 + 2)] == [2, 3]
    assert [r.seq for r in store.list_telemetry("cam", limit=2)] == [3, 4]  # the newest, oldest first
    assert [r.seq for r in store.list_telemetry("cam", name="cpuPercent")] == [1, 3]
    assert [r.seq for r in store.list_telemetry("cam", name="scoring")] == [2, 4]
    assert [r.seq for r in store.list_telemetry("cam", name="requestsPerSecond")] == [2, 4]  # in models[]
    assert [r.seq for r in store.list_telemetry("cam", name="requestsPerSecond", module="b")] == [4]
    assert store.list_telemetry("cam", name="nothing") == []
    assert store.list_telemetry("cam", kind="health")[0].data["diskFreeBytes"] == 10_000
    with pytest.raises(InvalidInputError, match="telemetry name"):
        store.list_telemetry("cam", name='x"y')
    with pytest.raises(InvalidInputError, match="limit"):
        store.list_telemetry("cam", limit=0)
    with pytest.raises(NotFoundError, match="no device"):
        store.list_telemetry("nobody")


def test_fleet_health_sums_the_newest_records(store: SqlStore) -> None:
    store.create_device("a")
    store.create_device("b")
    store.update_device_state("a", status="online", seen_at=5.0)
    modules = {"iris": {"runtimeStatus": "running", "rollback": {}}, "bad": {"runtimeStatus": "backoff",
               "statusDescription": "exited with 1"}, "kept": {"runtimeStatus": "running",
               "rollback": {"fromDigest": "sha256:x", "reason": "warm-up failed"}}}  # fmt: skip
    store.record_reported("a", {"lastDesiredVersion": 2, "modules": modules}, seen_at=6.0)
    store.insert_telemetry(
        "a",
        [
            health(1, 10.0, cpu=1.0),
            scoring(2, 10.0, "iris", 100, 50, 10.0),
            health(3, 20.0, cpu=30.0, disk_free=777),
            scoring(4, 20.0, "iris", 20, 5, 2.0),
            scoring(5, 20.0, "other", 80, 0, 8.0),
        ],
    )
    a, b = store.fleet_health()
    assert a.id == "a" and a.online and a.reported_version == 2
    assert (a.cpu_percent, a.disk_free_bytes, a.health_at) == (30.0, 777, 20.0)
    assert a.requests_per_second == pytest.approx(10.0) and a.error_rate == pytest.approx(5 / 100)
    assert [(m["module"], m["status"]) for m in a.failing_modules] == [("bad", "backoff"), ("kept", "rolled-back")]
    assert a.telemetry_records == 5
    assert b.id == "b" and not b.online and b.cpu_percent is None and b.requests_per_second is None
    assert [d.id for d in store.fleet_health(tags={"none": None})] == []


def test_removing_a_device_removes_its_records(store: SqlStore) -> None:
    store.create_device("cam")
    store.insert_telemetry("cam", [health(1, 1.0)])
    store.delete_device("cam")
    store.create_device("cam")
    assert store.list_telemetry("cam") == []


def test_ingest_rate_into_the_store(store: SqlStore, capsys: pytest.CaptureFixture[str]) -> None:
    """Not a timing assertion: prints records per second for the report (batches of 5000, as the agent sends)."""
    store.create_device("cam")
    batch, batches = 5000, 10
    started = time.perf_counter()
    for index in range(batches):
        records = [health(index * batch + i + 1, 1.0 + i) for i in range(batch)]
        result = store.insert_telemetry("cam", records)
        assert result is not None and result.inserted == batch
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\n[{store._db.dialect}] telemetry insert: {batch * batches / elapsed:,.0f} records/s")
