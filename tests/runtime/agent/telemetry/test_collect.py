"""The collector: scoring statistics from a real edgewise-score, samples across rotation, one spool append."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgewise.runtime.agent.telemetry import ModuleTap, TelemetryCollector, TelemetrySpool
from edgewise.runtime.agent.telemetry.collect import SampleTail, StatsDeltas, fetch_model_stats, http_get

from tests.runtime.scoring.builders import add_model
from tests.support import ServerProcess, start_server


def infer(server: ServerProcess, count: int, *, bad: int = 0) -> None:
    with server.http() as client:
        for i in range(count):
            body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [i, 1, 2, 3]}]}
            assert client.post("/v2/models/adder/infer", json=body).status_code == 200
        for _ in range(bad):
            body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
            assert client.post("/v2/models/adder/infer", json=body).status_code == 400


@pytest.fixture
def scoring(tmp_path: Path) -> Iterator[ServerProcess]:
    repo = tmp_path / "repo"
    add_model(repo / "adder" / "1" / "model.onnx", offset=1.0)
    admin = Path(f"/tmp/ew-admin-{time.monotonic_ns()}")  # short: unix socket paths are limited to 108 bytes
    admin.mkdir()
    server = start_server(
        repo, "--admin-socket-dir", str(admin), "--sample-file", str(tmp_path / "samples.jsonl"), "--sample-rate", "1"
    )
    yield server
    server.stop()
    for child in admin.iterdir():
        child.unlink()
    admin.rmdir()


def test_stats_deltas_between_scrapes_over_tcp(scoring: ServerProcess) -> None:
    deltas = StatsDeltas()
    infer(scoring, 3)
    first = deltas.summarise("iris", fetch_model_stats(scoring.http_url), now=100.0)
    [model] = first["models"]
    assert (model["name"], model["version"], model["successCount"], model["requests"]) == ("adder", "1", 3, 3)
    assert model["requestsPerSecond"] is None and model["meanLatencyMs"] > 0
    infer(scoring, 4, bad=2)
    [model] = deltas.summarise("iris", fetch_model_stats(scoring.http_url), now=110.0)["models"]
    assert (model["successCount"], model["failCount"], model["requests"], model["errors"]) == (7, 2, 6, 2)
    assert model["requestsPerSecond"] == pytest.approx(0.6)
    with pytest.raises(OSError):
        fetch_model_stats(Path("/nonexistent/http.sock"))


def test_collect_once_appends_health_scoring_and_samples(scoring: ServerProcess, tmp_path: Path) -> None:
    admin = Path(scoring.args[1])
    if not (admin / "http.sock").exists():
        pytest.skip("this scoring server has no admin HTTP socket yet")
    infer(scoring, 2)
    spool = TelemetrySpool(path=tmp_path / "state" / "telemetry.sqlite", max_bytes=1 << 30, time_to_live=3600.0)
    collector = TelemetryCollector(spool=spool, state_dir=tmp_path / "state")
    taps = [
        ModuleTap(name="iris", admin_dir=admin, sample_file=tmp_path / "samples.jsonl"),
        ModuleTap(name="gone", admin_dir=tmp_path / "no-such-admin", sample_file=None),
    ]
    assert asyncio.run(collector.collect_once(taps)) == 5
    records = spool.pending(100)
    assert [(r["kind"], r["module"]) for r in records] == [
        ("health", None),
        ("scoring", "iris"),
        ("scoring", "gone"),
        ("sample", "iris"),
        ("sample", "iris"),
    ]
    assert {"cpuPercent", "memoryTotalBytes", "diskFreeBytes"} <= set(records[0]["data"])
    assert records[1]["data"]["available"] is True
    assert records[1]["data"]["models"][0]["successCount"] == 2
    assert records[2]["data"]["available"] is False and "no-such-admin" in records[2]["data"]["error"]
    assert [r["data"]["inputs"]["x"]["data"][0][0] for r in records[3:]] == [0.0, 1.0]

    infer(scoring, 1)
    assert asyncio.run(collector.collect_once(taps[:1])) == 3  # only the new sample
    newest = spool.pending(100, after=records[-1]["seq"])
    assert newest[1]["data"]["models"][0]["requests"] == 1
    spool.close()


def test_sample_tail_follows_rotation_and_remembers_offsets(tmp_path: Path) -> None:
    file = tmp_path / "s.jsonl"
    offsets = tmp_path / "offsets.json"
    tail = SampleTail(offsets)
    assert tail.read(file) == []  # not there yet
    file.write_text('{"n": 1}\n{"n": 2}\n{"n": 3')  # the last line is still being written
    assert [json.loads(line)["n"] for line in tail.read(file)] == [1, 2]
    with file.open("a") as f:
        f.write('}\n{"n": 4}\n')
    file.rename(tmp_path / "s.jsonl.1")  # rotated before the next read...
    file.write_text('{"n": 5}\n')  # ...and a new file started
    assert [json.loads(line)["n"] for line in tail.read(file)] == [3, 4, 5]
    tail.save()
    with file.open("a") as f:
        f.write('{"n": 6}\n')
    again = SampleTail(offsets)  # after an agent restart
    assert [json.loads(line)["n"] for line in again.read(file)] == [6]
    file.write_text('{"n": 7}\n')  # truncated in place: start over
    assert [json.loads(line)["n"] for line in again.read(file)] == [7]


def test_http_get_speaks_to_host_and_port_and_unix_sockets(scoring: ServerProcess) -> None:
    assert http_get(scoring.http_url, "/v2/health/ready")[0] == 200
    assert http_get(scoring.http_url, "/v2/models/nope/ready")[0] == 404
    admin = Path(scoring.args[1]) / "http.sock"
    if admin.exists():
        assert http_get(admin, "/v2/health/live")[0] == 200
