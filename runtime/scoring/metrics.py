"""Prometheus metrics for the scoring server, labelled by model and version.

Each server owns its own CollectorRegistry so that several servers (and tests) can live in one process.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_CYCLE_BUCKETS = tuple(2**n for n in range(4, 25, 2))  # 16 .. 16M clock cycles
# The response parameter in which an FPGA backend reports the clock cycles of a call.
FPGA_CYCLES = "fpga_cycles"


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("model", "version")
        self.requests = Counter(
            "edgewise_inference_requests", "Inference requests by outcome.", (*labels, "outcome"),
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "edgewise_inference_request_duration_seconds", "Time from receipt to response.", labels,
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.queue_seconds = Histogram(
            "edgewise_inference_queue_duration_seconds", "Time spent waiting for a batch.", labels,
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.compute_seconds = Histogram(
            "edgewise_inference_compute_duration_seconds", "Backend time per execution.", labels,
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "edgewise_inference_batch_size", "Batch size per backend execution.", labels,
            buckets=_BATCH_BUCKETS, registry=self.registry,
        )
        self.model_ready = Gauge(
            "edgewise_model_ready", "1 when the model version is ready to serve.", labels,
            registry=self.registry,
        )
        self.fpga_cycles = Histogram(
            "edgewise_fpga_cycles", "FPGA clock cycles per inference request.", labels,
            buckets=_CYCLE_BUCKETS, registry=self.registry,
        )

    def for_model(self, model: str, version: str) -> ModelMetrics:
        return ModelMetrics(
            success=self.requests.labels(model, version, "success"),
            failure=self.requests.labels(model, version, "failure"),
            request_seconds=self.request_seconds.labels(model, version),
            queue_seconds=self.queue_seconds.labels(model, version),
            compute_seconds=self.compute_seconds.labels(model, version),
            batch_size=self.batch_size.labels(model, version),
            ready=self.model_ready.labels(model, version),
            labels=(model, version),
            fpga_cycles_family=self.fpga_cycles,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


_spare: ServerMetrics | None = None


def make_spare() -> None:
    """For a process that forks servers: make the metrics of the next server now. Each forked server takes its
    own copy of them (`server_metrics`) instead of making its own, about half a millisecond of every start."""
    global _spare
    _spare = ServerMetrics()


def server_metrics() -> ServerMetrics:
    """A new server's metrics: the spare this process was forked with, if any, else new ones."""
    global _spare
    metrics, _spare = _spare, None
    return metrics if metrics is not None else ServerMetrics()


@dataclass(slots=True)
class ModelMetrics:
    """Label-bound children, resolved once per model version so the hot path skips label lookups."""

    success: Counter
    failure: Counter
    request_seconds: Histogram
    queue_seconds: Histogram
    compute_seconds: Histogram
    batch_size: Histogram
    ready: Gauge
    labels: tuple[str, str]
    fpga_cycles_family: Histogram
    fpga_cycles: Histogram | None = None  # bound on first use, so models without an FPGA add no series

    def observe_fpga_cycles(self, cycles: int) -> None:
        child = self.fpga_cycles
        if child is None:
            child = self.fpga_cycles = self.fpga_cycles_family.labels(*self.labels)
        child.observe(cycles)
