"""The reference: onnxruntime's session.run called in a loop in this process, no serving at all."""

from __future__ import annotations

import threading
import time

from _cases import ModelCase, session
from _load import _percentiles

MAX_CALLS = 2_000_000


def latency(case: ModelCase, threads: int, seconds: float) -> dict[str, object]:
    """Sequential session.run on one sample row, bounded by time and call count."""
    sess, feed = session(case.onnx_path, threads), {case.input_name: case.sample}
    for _ in range(200):
        sess.run(None, feed)
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < MAX_CALLS and (start := time.perf_counter()) < deadline:
        sess.run(None, feed)
        samples.append((time.perf_counter() - start) * 1000)
    return {**_percentiles(sorted(samples)), "rps": round(len(samples) / seconds, 1)}


def throughput(case: ModelCase, threads: int, inflight: int, seconds: float) -> dict[str, object]:
    """`inflight` Python threads sharing one session (onnxruntime releases the GIL inside run)."""
    sess, feed = session(case.onnx_path, threads), {case.input_name: case.sample}
    counts = [0] * inflight
    deadline = time.perf_counter() + seconds
    quota = MAX_CALLS // inflight

    def loop(slot: int) -> None:
        while counts[slot] < quota and time.perf_counter() < deadline:
            sess.run(None, feed)
            counts[slot] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(inflight)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {"rps": round(sum(counts) / (time.perf_counter() - start), 1), "requests": sum(counts)}
