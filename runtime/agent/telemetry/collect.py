"""Periodic telemetry: device health, each module's scoring statistics, and the requests it sampled.

Statistics are scraped from the module's private admin HTTP socket (`GET /v2/models/stats`, the protocol's
statistics extension), so a handover's two versions, which share the public ports, are never mixed up. The
counters there only grow; each `scoring` record carries them and their change since the previous call.
Samples are JSON lines the scoring server appends to its sample file; the byte offset read so far is kept in
the state directory, and a file rotated to `<file>.1` is finished before the new one is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from edgewise.runtime.agent import unixhttp
from edgewise.runtime.agent.device import device_health
from edgewise.runtime.agent.telemetry.spool import Record, TelemetrySpool

log = logging.getLogger(__name__)

STATS_PATH = "/v2/models/stats"
STATS_TIMEOUT = 2.0
SAMPLE_BYTES_PER_COLLECT = 8 * 1024 * 1024  # read at most this much of a sample file per call; the rest next time
OFFSETS_FILE = "telemetry-samples.json"


@dataclass(frozen=True, kw_only=True)
class ModuleTap:
    name: str
    admin_dir: Path  # the module's private sockets (http.sock, grpc.sock)
    sample_file: Path | None


# -- statistics ------------------------------------------------------------------------------------


def http_get(target: Path | str, path: str, *, timeout: float = STATS_TIMEOUT) -> tuple[int, bytes]:
    """GET `path` from a unix socket (a Path) or "host:port" (a str); (status, body). Raises OSError."""
    return unixhttp.request(target, "GET", path, timeout=timeout)


def fetch_model_stats(target: Path | str, *, timeout: float = STATS_TIMEOUT) -> list[dict[str, Any]]:
    """The `model_stats` list of a scoring server. Raises OSError when it cannot be read."""
    return _model_stats(target, *http_get(target, STATS_PATH, timeout=timeout))


async def fetch_model_stats_async(socket_path: Path, *, timeout: float = STATS_TIMEOUT) -> list[dict[str, Any]]:
    """`fetch_model_stats` from a unix socket on the event loop, holding no thread."""
    return _model_stats(socket_path, *await unixhttp.request_async(socket_path, "GET", STATS_PATH, timeout=timeout))


def _model_stats(target: Path | str, status: int, body: bytes) -> list[dict[str, Any]]:
    if status != 200:
        raise OSError(f"{target} answered {status} to GET {STATS_PATH}: {body[:200]!r}")
    try:
        stats = orjson.loads(body).get("model_stats", [])
    except (orjson.JSONDecodeError, AttributeError) as exc:
        raise OSError(f"{target} answered GET {STATS_PATH} with something other than JSON statistics") from exc
    return [s for s in stats if isinstance(s, dict)]


def _count(stats: Mapping[str, Any], name: str, field: str = "count") -> int:
    value = stats.get("inference_stats", {}).get(name, {}).get(field, 0)
    return int(value) if isinstance(value, (int, float)) else 0


@dataclass(frozen=True)
class _Counters:
    at: float
    success: int
    fail: int
    success_ns: int
    queue_count: int
    queue_ns: int
    inferences: int


def _counters(stats: Mapping[str, Any], at: float) -> _Counters:
    return _Counters(
        at=at,
        success=_count(stats, "success"),
        fail=_count(stats, "fail"),
        success_ns=_count(stats, "success", "ns"),
        queue_count=_count(stats, "queue"),
        queue_ns=_count(stats, "queue", "ns"),
        inferences=int(stats.get("inference_count", 0) or 0),
    )


class StatsDeltas:
    """Turns growing counters into per-interval figures; a counter that went down means the module restarted."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str, str], _Counters] = {}

    def summarise(self, module: str, model_stats: Sequence[Mapping[str, Any]], *, now: float) -> dict[str, Any]:
        models = []
        seen = set()
        for stats in model_stats:
            key = (module, str(stats.get("name", "")), str(stats.get("version", "")))
            seen.add(key)
            current = _counters(stats, now)
            previous = self._last.get(key)
            if previous is None or current.success < previous.success or current.fail < previous.fail:
                previous = _Counters(at=now, success=0, fail=0, success_ns=0, queue_count=0, queue_ns=0, inferences=0)
                interval = None
            else:
                interval = now - previous.at
            self._last[key] = current
            requests = current.success - previous.success + current.fail - previous.fail
            ok = current.success - previous.success
            queued = current.queue_count - previous.queue_count
            models.append(
                {
                    "name": key[1],
                    "version": key[2],
                    "inferenceCount": current.inferences,
                    "successCount": current.success,
                    "failCount": current.fail,
                    "requests": requests,
                    "errors": current.fail - previous.fail,
                    "requestsPerSecond": round(requests / interval, 3) if interval else None,
                    "meanLatencyMs": round((current.success_ns - previous.success_ns) / ok / 1e6, 3) if ok else None,
                    "meanQueueMs": round((current.queue_ns - previous.queue_ns) / queued / 1e6, 3) if queued else None,
                }
            )
        for key in [k for k in self._last if k[0] == module and k not in seen]:
            del self._last[key]  # an unloaded version
        return {"available": True, "models": models}


# -- samples ---------------------------------------------------------------------------------------


class SampleTail:
    """Reads the complete lines appended to sample files since last time, across rotation to `<file>.1`."""

    def __init__(self, offsets_path: Path) -> None:
        self._path = offsets_path
        self._state: dict[str, dict[str, int]] = {}
        with contextlib.suppress(OSError, orjson.JSONDecodeError, AttributeError):
            loaded = orjson.loads(offsets_path.read_bytes())
            self._state = {str(k): {"inode": int(v["inode"]), "offset": int(v["offset"])} for k, v in loaded.items()}
        self._saved = orjson.dumps(self._state)

    def read(self, file: Path, limit: int = SAMPLE_BYTES_PER_COLLECT) -> list[bytes]:
        state = self._state.setdefault(str(file), {"inode": 0, "offset": 0})
        lines: list[bytes] = []
        current = _stat_inode(file)
        if state["inode"] and current != state["inode"]:
            rotated = file.with_name(file.name + ".1")
            if _stat_inode(rotated) == state["inode"]:
                lines += _read_lines(rotated, state["offset"], limit, final=True)[0]
            state["inode"], state["offset"] = current or 0, 0
        if current is None:
            return lines
        state["inode"] = current
        chunk, offset = _read_lines(file, state["offset"], max(0, limit - sum(map(len, lines))), final=False)
        state["offset"] = offset
        return lines + chunk

    def save(self) -> None:
        """Write the offsets when they moved (a device whose modules sample nothing writes nothing)."""
        document = orjson.dumps(self._state)
        if document == self._saved:
            return
        temporary = self._path.with_name(self._path.name + ".tmp")
        try:
            temporary.write_bytes(document)
            os.replace(temporary, self._path)
        except OSError as exc:
            log.warning("cannot save sample file offsets to %s: %s", self._path, exc)
            return
        self._saved = document


def _stat_inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _read_lines(path: Path, offset: int, limit: int, *, final: bool) -> tuple[list[bytes], int]:
    """Whole lines from `offset` (at most about `limit` bytes) and the offset after them."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < offset:  # truncated: start over
                offset = 0
            f.seek(offset)
            data = f.read(limit)
    except OSError:
        return [], offset
    end = len(data) if final and len(data) < limit else data.rfind(b"\n") + 1
    return [line for line in data[:end].split(b"\n") if line.strip()], offset + end


# -- the collector ---------------------------------------------------------------------------------


class TelemetryCollector:
    """One call per telemetry interval; everything it gathers goes into the spool in one transaction."""

    def __init__(self, *, spool: TelemetrySpool, state_dir: Path) -> None:
        self._spool = spool
        self._state_dir = state_dir
        self._deltas = StatsDeltas()
        self._samples = SampleTail(state_dir / OFFSETS_FILE)
        self._lock = asyncio.Lock()

    async def collect_once(self, modules: Sequence[ModuleTap]) -> int:
        """Append a health record, a scoring record per module and the new samples; returns how many."""
        async with self._lock:
            stats = await asyncio.gather(*(self._scrape(tap) for tap in modules))
            return await asyncio.to_thread(self._store, modules, stats)

    async def _scrape(self, tap: ModuleTap) -> dict[str, Any]:
        target = tap.admin_dir / "http.sock"
        try:
            model_stats = await fetch_model_stats_async(target)
        except OSError as exc:
            return {"available": False, "error": f"statistics unavailable from {target}: {exc}"}
        return self._deltas.summarise(tap.name, model_stats, now=time.monotonic())

    def _store(self, modules: Sequence[ModuleTap], stats: Sequence[dict[str, Any]]) -> int:
        records: list[Record] = [("health", None, device_health(self._state_dir))]
        records += [("scoring", tap.name, data) for tap, data in zip(modules, stats, strict=True)]
        for tap in modules:
            if tap.sample_file is None:
                continue
            for line in self._samples.read(tap.sample_file):
                try:
                    sample = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # a torn line from a crashed writer
                if isinstance(sample, dict):
                    records.append(("sample", tap.name, sample))
        self._spool.append(records)
        self._samples.save()
        return len(records)
