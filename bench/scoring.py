"""Scoring-server benchmark: edgewise-score beside a bare grpc.aio floor, MLServer 1.7 and KServe 0.21.

Same machine, same two models (tiny MatMul, 784-256-128-10 MLP), same load client per protocol.
Reports latency (p50/p99, one request in flight), throughput at several in-flight levels and memory,
plus ratios against the targets. The p50 target is judged on extra rounds that alternate floor and
edgewise while both run, since separate runs drift by several percent. It only reports: slow or failing
servers never fail the run; a competitor that cannot be installed or started becomes an error entry.

    .venv/bin/python bench/scoring.py            # full run (about 10-15 minutes on 2 cores)
    .venv/bin/python bench/scoring.py --quick    # smoke run, about 2 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import onnxruntime

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _inprocess
import _servers
from _cases import ModelCase, build_cases
from _harness import idle_cores, memory_mb
from _load import H2Load, ensure_h2load
from _measure import Client, endpoint, measure
from _paired import paired_p50
from _pyload import PyLoad
from _ratios import ratios, summary, table

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("floor", "edgewise", "mlserver", "kserve")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 s runs, for a smoke test")
    parser.add_argument(
        "--seconds", type=float, default=None, help="each throughput run (default 5, quick 1)"
    )
    parser.add_argument("--latency-seconds", type=float, default=None, help="the sequential run (default 5)")
    parser.add_argument("--inflight", default="1,4,16,64", help="in-flight levels for throughput")
    parser.add_argument("--servers", default=",".join(SERVERS), help="subset of " + ",".join(SERVERS))
    parser.add_argument("--ort-threads", type=int, default=1, help="onnxruntime intra-op threads everywhere")
    parser.add_argument(
        "--edgewise-workers", type=int, default=None, help="pass --workers N to edgewise-score"
    )
    parser.add_argument("--python-client", action="store_true", help="use the Python client even with h2load")
    parser.add_argument(
        "--start-timeout", type=float, default=180.0, help="seconds a server gets to be ready"
    )
    parser.add_argument("--output", type=Path, default=ROOT / ".bench" / "scoring.json")
    parser.add_argument("--rounds", type=int, default=None, help="alternating floor/edgewise p50 rounds")
    parser.add_argument("--round-seconds", type=float, default=None, help="each of those rounds (default 2)")
    opts = parser.parse_args()
    opts.rounds = opts.rounds if opts.rounds is not None else (2 if opts.quick else 8)
    opts.round_seconds = opts.round_seconds or (0.5 if opts.quick else 2.0)
    opts.seconds = opts.seconds or (1.0 if opts.quick else 5.0)
    opts.latency_seconds = opts.latency_seconds or (1.0 if opts.quick else 5.0)
    opts.inflight = [int(x) for x in opts.inflight.split(",")]
    opts.servers = [s for s in opts.servers.split(",") if s]
    unknown = set(opts.servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers: {sorted(unknown)}")
    return opts


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def in_process(cases: list[ModelCase], opts: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for case in cases:
        log(f"in-process onnxruntime: {case.name}")
        result[case.name] = {
            "latency": _inprocess.latency(case, opts.ort_threads, opts.latency_seconds),
            "throughput": {
                str(n): _inprocess.throughput(case, opts.ort_threads, n, opts.seconds) for n in opts.inflight
            },
        }
    return {"note": "session.run in a loop; in-flight N = N threads sharing one session", "models": result}


def launch(name: str, cases: list[ModelCase], work: Path, opts: argparse.Namespace) -> _servers.Launch:
    threads, timeout = opts.ort_threads, opts.start_timeout
    if name == "floor":
        return _servers.floor(cases, work, threads, timeout)
    if name == "edgewise":
        return _servers.edgewise(cases, work, threads, timeout, opts.edgewise_workers)
    if name == "mlserver":
        return _servers.mlserver(cases, work, threads, timeout)
    return _servers.kserve(cases, work, threads, timeout)


def bench_server(
    name: str, cases: list[ModelCase], work: Path, client: Client, opts: argparse.Namespace
) -> dict[str, Any]:
    """Start one server, measure every model and protocol it offers, stop it; errors become entries."""
    log(f"{name}: starting")
    try:
        server = launch(name, cases, work, opts)
    except Exception as exc:  # a competitor that cannot install or start is reported, not fatal
        log(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
        return {"error": f"{type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {"settings": server.settings, "seconds_to_ready": server.process.ready_seconds}
    try:
        memory = [memory_mb(server.process.pid)]
        out["memory_idle"] = memory[0]
        out["models"] = {
            case.name: measure_models(server, case, work, client, opts, memory) for case in cases
        }
        out["memory_peak"] = max(memory, key=lambda m: m["rss_mb"])
    finally:
        server.stop()
    return out


def measure_models(
    server: _servers.Launch,
    case: ModelCase,
    work: Path,
    client: Client,
    opts: argparse.Namespace,
    memory: list[dict[str, float]],
) -> dict[str, Any]:
    """Every protocol the server offers for one model; one failing protocol does not stop the others."""
    protocols = ["grpc"] + ([f"rest-{e}" for e in server.rest_encodings] if server.http_port else [])
    results: dict[str, Any] = {}
    for protocol in protocols:
        port = server.grpc_port if protocol == "grpc" else server.http_port
        assert port is not None
        log(f"{server.name}: {case.name} over {protocol}")
        target, verify = endpoint(protocol, port, case, work / "bodies")
        try:
            results[protocol] = measure(
                client,
                target,
                verify,
                opts.inflight,
                opts.seconds,
                opts.latency_seconds,
                server.process.pid,
                memory,
            )
        except Exception as exc:
            results[protocol] = {"error": f"{type(exc).__name__}: {exc}"}
        if "error" in results[protocol]:
            log(f"{server.name}: {case.name} over {protocol}: {results[protocol]['error'][:200]}")
    return results


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def main() -> None:
    opts = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the servers we started
    started = time.monotonic()
    work = ROOT / ".bench" / "scoring-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cases = build_cases(work, opts.ort_threads)
    h2load = None if opts.python_client else ensure_h2load()
    client: Client = H2Load(h2load) if h2load else PyLoad()
    report: dict[str, Any] = {
        "meta": {
            "quick": opts.quick,
            "seconds_per_throughput_run": opts.seconds,
            "seconds_latency_run": opts.latency_seconds,
            "inflight": opts.inflight,
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
            "grpcio": grpc.__version__,
            "onnxruntime_threads": opts.ort_threads,
            "loadavg_at_start": _loadavg(),
            "idle_cores_at_start": idle_cores(),
            "client": {
                "name": client.name,
                "version": client.version,
                "shape": "in-flight N = N connections x 1 outstanding request; gRPC h2c, REST HTTP/1.1",
            },
            "rss_note": "rss_mb sums RSS over the server's process tree; pss_mb splits shared pages",
        },
        "inprocess": in_process(cases, opts),
        "servers": {},
    }
    for name in opts.servers:
        report["servers"][name] = bench_server(name, cases, work, client, opts)
    if {"floor", "edgewise"} <= set(opts.servers) and opts.rounds > 0:
        log(f"floor and edgewise together: {opts.rounds} alternating latency rounds per model")
        try:
            report["paired_p50"] = paired_p50(
                cases, lambda n: launch(n, cases, work, opts), client, work, opts.rounds, opts.round_seconds
            )
        except Exception as exc:
            report["paired_p50"] = {"error": f"{type(exc).__name__}: {exc}"}
    report["summary"] = summary(report)
    report["ratios"] = ratios(report, [c.name for c in cases])
    report["meta"]["total_seconds"] = round(time.monotonic() - started, 1)
    report["meta"]["loadavg_at_end"] = _loadavg()
    report["meta"]["idle_cores_at_end"] = idle_cores()
    text = json.dumps(report, indent=2)
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(text + "\n")
    print(text)
    print(table(report["summary"], opts.inflight), file=sys.stderr)
    for model, checks in report["ratios"].items():
        for name, check in checks.items():
            print(
                f"{model:<8}{name:<48}{check['value']!s:>8} {check['target']:<8} pass={check['pass']}",
                file=sys.stderr,
            )
    log(f"wrote {opts.output}")


if __name__ == "__main__":
    main()
