"""The telemetry spool on real SQLite: sequence numbers, acknowledgement, bounds and drop counts."""

from __future__ import annotations

import time
from pathlib import Path

from edgewise.runtime.agent.telemetry.spool import RECORD_OVERHEAD, TelemetrySpool


def open_spool(tmp_path: Path, *, max_bytes: int = 1 << 30, ttl: float = 3600.0) -> TelemetrySpool:
    return TelemetrySpool(path=tmp_path / "telemetry.sqlite", max_bytes=max_bytes, time_to_live=ttl)


def test_records_keep_their_shape_and_order(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    assert spool.append([("health", None, {"cpuPercent": 3.5}), ("scoring", "iris", {"models": []})], ts=100.0) == (
        1,
        2,
    )
    assert spool.append([("event", "iris", {"what": "started"})], ts=101.0) == (3, 3)
    assert spool.pending(10) == [
        {"seq": 1, "ts": 100.0, "kind": "health", "module": None, "data": {"cpuPercent": 3.5}},
        {"seq": 2, "ts": 100.0, "kind": "scoring", "module": "iris", "data": {"models": []}},
        {"seq": 3, "ts": 101.0, "kind": "event", "module": "iris", "data": {"what": "started"}},
    ]
    assert [r["seq"] for r in spool.pending(10, after=1)] == [2, 3]
    assert [r["seq"] for r in spool.pending(1)] == [1]
    assert spool.pending_count() == 3
    spool.close()


def test_sequence_never_repeats_after_acknowledge_and_restart(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append([("event", None, {"i": i}) for i in range(5)])
    spool.acknowledge(5)
    assert spool.pending_count() == 0 and spool.pending(10) == []
    assert spool.pending_bytes() == 0
    spool.close()
    spool = open_spool(tmp_path)
    assert spool.last_sequence() == 5
    assert spool.append([("event", None, {})]) == (6, 6)
    spool.acknowledge(3)  # an older acknowledgement changes nothing
    assert [r["seq"] for r in spool.pending(10)] == [6]
    spool.close()


def test_time_to_live_drops_and_counts(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, ttl=60.0)
    now = time.time()
    spool.append([("event", None, {"i": i}) for i in range(4)], ts=now - 120)
    spool.append([("event", None, {"i": 9})], ts=now)
    spool.enforce_bounds(now=now)
    assert [r["data"]["i"] for r in spool.pending(10)] == [9]
    assert spool.dropped() == {"ttl": 4, "maxBytes": 0}
    spool.close()
    assert open_spool(tmp_path, ttl=60.0).dropped() == {"ttl": 4, "maxBytes": 0}  # persisted


def test_max_bytes_drops_the_oldest_and_counts(tmp_path: Path) -> None:
    data = {"payload": "x" * 100}
    size = len('{"payload":"' + "x" * 100 + '"}') + len("event") + RECORD_OVERHEAD
    spool = open_spool(tmp_path, max_bytes=size * 10)
    for _ in range(3):
        spool.append([("event", None, data)] * 4)  # 12 records of room for 10
    seqs = [r["seq"] for r in spool.pending(100)]
    assert seqs == list(range(3, 13))
    assert spool.dropped() == {"ttl": 0, "maxBytes": 2}
    assert spool.pending_bytes() == size * 10
    spool.configure(max_bytes=size * 4, time_to_live=3600.0)  # a tighter bound applies at once
    assert [r["seq"] for r in spool.pending(100)] == list(range(9, 13))
    assert spool.dropped() == {"ttl": 0, "maxBytes": 8}
    spool.close()
    reopened = open_spool(tmp_path, max_bytes=size * 4)
    assert reopened.pending_bytes() == size * 4 and reopened.pending_count() == 4
    assert reopened.dropped()["maxBytes"] == 8
    reopened.close()


def test_empty_append_assigns_nothing(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append([("event", None, {})])
    assert spool.append([]) == (2, 1)
    assert spool.last_sequence() == 1
    spool.close()
