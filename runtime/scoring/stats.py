"""Per model-version statistics in the shape of the protocol's ModelStatistics extension."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from edgewise.runtime.scoring.metrics import FPGA_CYCLES, ModelMetrics
from edgewise.runtime.scoring.types import Parameters


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass(slots=True)
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class ModelStats:
    name: str
    version: str
    metrics: ModelMetrics | None = None
    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, BatchStats] = field(default_factory=dict)

    def record_execution(self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One backend call that served `batch_size` inferences."""
        self.execution_count += 1
        self.inference_count += batch_size
        self.compute_input.add(input_ns, batch_size)
        self.compute_infer.add(infer_ns, batch_size)
        self.compute_output.add(output_ns, batch_size)
        batch = self.batches.get(batch_size)
        if batch is None:
            batch = self.batches[batch_size] = BatchStats()
        batch.compute_input.add(input_ns)
        batch.compute_infer.add(infer_ns)
        batch.compute_output.add(output_ns)
        if self.metrics is not None:
            self.metrics.batch_size.observe(batch_size)
            self.metrics.compute_seconds.observe((input_ns + infer_ns + output_ns) / 1e9)

    def record_parameters(self, parameters: Parameters) -> None:
        """Response parameters that have a metric of their own (an FPGA's clock cycles)."""
        cycles = parameters.get(FPGA_CYCLES)
        if self.metrics is not None and isinstance(cycles, int):
            self.metrics.observe_fpga_cycles(cycles)

    def record_queue(self, ns: int) -> None:
        self.queue.add(ns)
        if self.metrics is not None:
            self.metrics.queue_seconds.observe(ns / 1e9)

    def record_request(self, ns: int, *, ok: bool) -> None:
        self.last_inference_ms = time.time_ns() // 1_000_000
        if ok:
            self.success.add(ns)
        else:
            self.fail.add(ns)
        if self.metrics is not None:
            (self.metrics.success if ok else self.metrics.failure).inc()
            self.metrics.request_seconds.observe(ns / 1e9)
