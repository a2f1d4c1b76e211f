"""The load client: h2load (nghttp2) when present, since a C client leaves both cores to the server.

One h2load command line serves every server of a protocol, so ratios compare servers, not clients.
In-flight N means N connections with one outstanding request each (HTTP/1.1 cannot multiplex).
"""

from __future__ import annotations

import dataclasses
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Target:
    """An endpoint under load: protocol, URL, pre-encoded body and headers, expected response size."""

    protocol: str  # "grpc" (HTTP/2 with prior knowledge) or "rest" (HTTP/1.1)
    port: int
    path: str
    body: Path
    headers: dict[str, str] = field(default_factory=dict)
    response_bytes: int | None = None  # body bytes of one good response, from a verified sample

    def with_response_bytes(self, size: int) -> Target:
        return dataclasses.replace(self, response_bytes=size)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


def ensure_h2load() -> str | None:
    """Path of h2load, installing Debian's nghttp2-client once if it is missing; None if unavailable."""
    found = shutil.which("h2load")
    if found:
        return found
    if shutil.which("apt-get"):
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "nghttp2-client"]):
            subprocess.run(cmd, capture_output=True, timeout=600, env=env, check=False)
    return shutil.which("h2load")


def _command(h2load: str, target: Target, clients: int, bound: list[str]) -> list[str]:
    cmd = [h2load, "-c", str(clients), "-m", "1", "-t", "1", *bound, "-d", str(target.body)]
    if target.protocol == "rest":
        cmd.append("--h1")
    for key, value in target.headers.items():
        cmd += ["-H", f"{key}: {value}"]
    return [*cmd, target.url]


_NUM = r"([\d.]+)"


def _parse(text: str) -> dict[str, float]:
    """The figures h2load prints: rate, request outcomes, status classes, data bytes."""
    figures: dict[str, float] = {}
    patterns = {
        "rps": rf"finished in [\d.]+\w+, {_NUM} req/s",
        "done": rf"requests: \d+ total, \d+ started, {_NUM} done",
        "succeeded": rf"{_NUM} succeeded",
        "failed": rf"{_NUM} failed",
        "errored": rf"{_NUM} errored",
        "timeout": rf"{_NUM} timeout",
        "status_2xx": rf"status codes: {_NUM} 2xx",
        "data_bytes": rf"\(({_NUM[1:-1]})\) data",
    }
    for key, pattern in patterns.items():
        match = re.search(pattern, text)
        if match:
            figures[key] = float(match.group(1))
    return figures


class H2Load:
    """Runs h2load bounded by duration (its -D) or count (its -n), and by a hard subprocess timeout."""

    name = "h2load"

    def __init__(self, path: str) -> None:
        self.path = path
        version = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
        self.version = version.stdout.strip()

    def _run(
        self, target: Target, clients: int, bound: list[str], limit: float, log: Path | None = None
    ) -> dict[str, float]:
        cmd = _command(self.path, target, clients, bound + (["--log-file", str(log)] if log else []))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        figures = _parse(done.stdout)
        figures["client_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if done.returncode != 0 or "rps" not in figures:
            raise RuntimeError(f"h2load failed ({done.returncode}): {(done.stderr or done.stdout)[-400:]}")
        return figures

    def warm(self, target: Target, requests: int) -> None:
        self._run(target, 4, ["-n", str(requests)], limit=120)

    def throughput(self, target: Target, inflight: int, seconds: float) -> dict[str, object]:
        figures = self._run(target, inflight, ["-D", f"{round(seconds * 1000)}ms"], limit=seconds + 60)
        return _judge(target, figures)

    def latency(self, target: Target, seconds: float) -> dict[str, object]:
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "requests.tsv"
            figures = self._run(target, 1, ["-D", f"{round(seconds * 1000)}ms"], limit=seconds + 60, log=log)
            rows = [line.split("\t") for line in log.read_text().splitlines() if line]
        micros = sorted(int(row[2]) for row in rows if row[1].startswith("2"))
        result = _judge(target, figures)
        result.update(_percentiles([m / 1000 for m in micros]))
        return result


def _percentiles(millis: list[float]) -> dict[str, object]:
    """p50/p99/mean in milliseconds from sorted samples."""
    if not millis:
        return {"p50_ms": None, "p99_ms": None, "mean_ms": None, "samples": 0}

    def pick(q: float) -> float:
        return millis[min(len(millis) - 1, int(q * len(millis)))]

    return {
        "p50_ms": round(pick(0.50), 3),
        "p99_ms": round(pick(0.99), 3),
        "mean_ms": round(statistics.fmean(millis), 3),
        "samples": len(millis),
    }


def _judge(target: Target, figures: dict[str, float]) -> dict[str, object]:
    """Throughput plus a verdict: every request 2xx, and response bytes matching good responses.

    For gRPC, HTTP status is 200 even on failure; an error is a trailers-only response without DATA,
    so comparing DATA bytes to a verified response's size catches non-OK grpc-status.
    """
    done = figures.get("done", 0.0)
    ok = figures.get("succeeded", 0.0)
    result: dict[str, object] = {
        "rps": round(figures["rps"], 1),
        "requests": int(done),
        "failed": int(done - ok),
    }
    problems = []
    if ok < done or figures.get("status_2xx", 0.0) < ok:
        problems.append(f"{int(done - figures.get('status_2xx', 0.0))} of {int(done)} not 2xx")
    if target.response_bytes and ok:
        per = figures.get("data_bytes", 0.0) / ok
        result["bytes_per_response"] = round(per, 1)
        if abs(per - target.response_bytes) > 0.1 * target.response_bytes:
            problems.append(
                f"{per:.0f} response bytes per request, a good response has {target.response_bytes}"
            )
    result["client_cpu_s"] = round(figures.get("client_cpu_s", 0.0), 2)
    result["verified"] = not problems and ok > 0
    if problems:
        result["problems"] = problems
    return result
