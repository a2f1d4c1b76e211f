"""Fallback load client when h2load is unavailable: asyncio in 2 processes, bounded by count and time.

Costlier per request than h2load, so its figures flatter no one; the report names the client used.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import time
from typing import Any

from _load import Target, _percentiles

MAX_REQUESTS = 200_000


async def _grpc_task(target: Target, body: bytes, deadline: float, quota: int, lat: list[float]) -> int:
    import grpc

    errors = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{target.port}") as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(target.path)
        message = body[5:]  # h2load sends the length-prefixed frame; grpc adds its own prefix
        for _ in range(quota):
            if time.monotonic() >= deadline:
                break
            start = time.perf_counter()
            try:
                await call(message, timeout=30)
                lat.append((time.perf_counter() - start) * 1000)
            except grpc.RpcError:
                errors += 1
    return errors


async def _rest_task(target: Target, body: bytes, deadline: float, quota: int, lat: list[float]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    head = f"POST {target.path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in target.headers.items()) + "\r\n"
    request, errors = head.encode() + body, 0
    try:
        for _ in range(quota):
            if time.monotonic() >= deadline:
                break
            start = time.perf_counter()
            writer.write(request)
            status = (await reader.readline()).split(b" ", 2)
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if len(status) > 1 and status[1].startswith(b"2"):
                lat.append((time.perf_counter() - start) * 1000)
            else:
                errors += 1
    finally:
        writer.close()
    return errors


async def _worker(target: Target, tasks: int, seconds: float, quota: int) -> tuple[int, list[float], float]:
    body = target.body.read_bytes()
    start = time.monotonic()
    lat: list[float] = []
    task = _grpc_task if target.protocol == "grpc" else _rest_task
    errors = await asyncio.gather(*(task(target, body, start + seconds, quota, lat) for _ in range(tasks)))
    return sum(errors), lat, time.monotonic() - start


def _process(args: tuple[Target, int, float, int]) -> tuple[int, list[float], float]:
    return asyncio.run(_worker(*args))


class PyLoad:
    """Same interface as _load.H2Load."""

    name = "python-asyncio (fallback)"
    version = "grpc.aio / asyncio streams"

    client_cpu_s = 0.0

    def _run(self, target: Target, inflight: int, seconds: float) -> tuple[int, list[float], float]:
        procs = min(2, inflight)
        split = [inflight // procs + (1 if i < inflight % procs else 0) for i in range(procs)]
        quota = MAX_REQUESTS // inflight
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with multiprocessing.get_context("spawn").Pool(procs) as pool:
            parts = pool.map(_process, [(target, n, seconds, quota) for n in split])
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.client_cpu_s = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        elapsed = max(p[2] for p in parts)  # each worker times itself, so process start-up is not counted
        return sum(p[0] for p in parts), sorted(x for p in parts for x in p[1]), elapsed

    def warm(self, target: Target, requests: int) -> None:
        self._run(target, 2, 1.0)

    def throughput(self, target: Target, inflight: int, seconds: float) -> dict[str, Any]:
        errors, lat, elapsed = self._run(target, inflight, seconds)
        return {
            "rps": round(len(lat) / elapsed, 1),
            "requests": len(lat) + errors,
            "failed": errors,
            "verified": errors == 0 and bool(lat),
            "client_cpu_s": round(self.client_cpu_s, 2),
        }

    def latency(self, target: Target, seconds: float) -> dict[str, Any]:
        errors, lat, elapsed = self._run(target, 1, seconds)
        result = {
            "rps": round(len(lat) / elapsed, 1),
            "requests": len(lat) + errors,
            "failed": errors,
            "verified": errors == 0 and bool(lat),
            "client_cpu_s": round(self.client_cpu_s, 2),
        }
        return {**result, **_percentiles(lat)}
