"""Request sampling: the sampler on its own, and a real edgewise-score writing samples at rate 1 and none at 0."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from edgewise.runtime.scoring.sampling import RequestSampler
from edgewise.runtime.scoring.settings import ServerSettings

from tests.runtime.scoring.builders import add_model
from tests.support import start_server


@dataclass
class T:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


def settings(tmp_path: Path, **kwargs: object) -> ServerSettings:
    return ServerSettings(model_repository=tmp_path, **kwargs)  # type: ignore[arg-type]


def test_sampling_is_off_without_a_file_or_rate(tmp_path: Path) -> None:
    assert RequestSampler.from_settings(settings(tmp_path)) is None
    assert RequestSampler.from_settings(settings(tmp_path, sample_file=tmp_path / "s.jsonl")) is None
    assert RequestSampler.from_settings(settings(tmp_path, sample_rate=1.0)) is None
    sampler = RequestSampler.from_settings(settings(tmp_path, sample_file=tmp_path / "s.jsonl", sample_rate=0.5))
    assert sampler is not None and sampler.rate == 0.5


def test_lines_hold_inputs_and_outputs_and_rotate(tmp_path: Path) -> None:
    path = tmp_path / "samples" / "s.jsonl"
    sampler = RequestSampler(path=path, rate=1.0, max_bytes=600)
    x = T("x", "FP32", (1, 2), np.array([[1.5, 2.0]], dtype=np.float32))
    words = T("w", "BYTES", (2,), np.array([b"cat", b"dog"], dtype=object))
    y = T("y", "INT64", (1,), np.array([7], dtype=np.int64))
    for _ in range(6):
        assert sampler.offer("m", "3", [x, words], [y])
    sampler.close()
    rotated = path.with_name("s.jsonl.1")
    assert rotated.exists() and path.stat().st_size <= 600 and rotated.stat().st_size <= 600
    lines = [json.loads(line) for f in (rotated, path) for line in f.read_text().splitlines()]
    assert len(lines) < 6  # the oldest were rotated away twice over
    line = lines[-1]
    assert line["model"] == "m" and line["version"] == "3" and isinstance(line["ts"], float)
    assert line["inputs"] == {
        "x": {"datatype": "FP32", "shape": [1, 2], "data": [[1.5, 2.0]]},
        "w": {"datatype": "BYTES", "shape": [2], "data": ["cat", "dog"]},
    }
    assert line["outputs"] == {"y": {"datatype": "INT64", "shape": [1], "data": [7]}}


def test_low_rate_samples_a_fraction(tmp_path: Path) -> None:
    sampler = RequestSampler(path=tmp_path / "s.jsonl", rate=0.2, max_bytes=1 << 20)
    x = T("x", "FP32", (1,), np.zeros(1, dtype=np.float32))
    written = sum(sampler.offer("m", "1", [x], [x]) for _ in range(2000))
    sampler.close()
    assert 200 < written < 600
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == written


def _infer(server_url: str, count: int) -> None:
    with httpx.Client(base_url=server_url, timeout=30.0, trust_env=False) as client:
        for i in range(count):
            body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [i, 1, 2, 3]}]}
            reply = client.post("/v2/models/adder/infer", json=body)
            assert reply.status_code == 200, reply.text


def test_server_samples_every_request_at_rate_one_and_none_at_zero(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    add_model(repo / "adder" / "1" / "model.onnx", offset=10.0)
    sampled = tmp_path / "on.jsonl"
    server = start_server(repo, "--sample-file", str(sampled), "--sample-rate", "1.0")
    try:
        _infer(server.base_url, 5)
    finally:
        server.stop()
    lines = [json.loads(line) for line in sampled.read_text().splitlines()]
    assert [line["inputs"]["x"]["data"][0][0] for line in lines] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert lines[2]["outputs"]["y"] == {"datatype": "FP32", "shape": [1, 4], "data": [[12.0, 11.0, 12.0, 13.0]]}
    assert {(line["model"], line["version"]) for line in lines} == {("adder", "1")}

    silent = tmp_path / "off.jsonl"
    server = start_server(repo, "--sample-file", str(silent), "--sample-rate", "0")
    try:
        _infer(server.base_url, 5)
    finally:
        server.stop()
    assert not silent.exists()
