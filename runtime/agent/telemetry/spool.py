"""The telemetry spool: records wait in SQLite until the broker acknowledged the message that carried them.

It also owns the device's record sequence: the last sequence number lives in the `meta` table, written in
the same transaction as the records, so numbers never repeat, even after every record was acknowledged and
deleted, or the agent restarted. Drops (too old, or beyond the size bound) are counted there too.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from edgewise.runtime.agent.errors import AgentError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    module TEXT,
    data TEXT NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_LAST_SEQ = "last_seq"
_DROPPED = {"ttl": "dropped_ttl", "maxBytes": "dropped_max_bytes"}
RECORD_OVERHEAD = 64  # bytes a record adds beyond its data in a message: seq, ts, kind, module, punctuation
_TTL_CHECK_INTERVAL = 5.0  # seconds between time-to-live checks made by `append` itself

Record = tuple[str, str | None, Mapping[str, Any]]


class TelemetrySpool:
    """Thread-safe: the collector appends and the sender reads from worker threads."""

    def __init__(self, *, path: Path, max_bytes: int, time_to_live: float) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self._ttl = time_to_live
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM records").fetchone()
        except sqlite3.Error as exc:
            raise AgentError(f"cannot open the telemetry spool {path}: {exc}; remove the file to start afresh") from exc
        self._bytes = int(row[0])
        self._count = int(row[1])
        self._last_ttl_check = 0.0
        # kept in memory as well: every reported state asks for them
        self._last_seq = self._meta(_LAST_SEQ)
        self._dropped = {name: self._meta(key) for name, key in _DROPPED.items()}

    def configure(self, *, max_bytes: int, time_to_live: float) -> None:
        """New bounds (from the manifest); applied at once when they changed."""
        if (max_bytes, time_to_live) == (self._max_bytes, self._ttl):
            return
        self._max_bytes = max_bytes
        self._ttl = time_to_live
        self.enforce_bounds()

    def append(self, records: Sequence[Record], *, ts: float | None = None) -> tuple[int, int]:
        """Store `records` (kind, module, data) with consecutive new seqs in one transaction; (first, last) seq."""
        if not records:
            last = self.last_sequence()
            return last + 1, last
        stamp = time.time() if ts is None else ts
        dumps = orjson.dumps
        rows = []
        added = 0
        with self._lock:
            first = self._last_seq + 1
            seq = first
            for kind, module, data in records:
                text = dumps(data).decode()
                size = len(text) + len(kind) + len(module or "") + RECORD_OVERHEAD
                rows.append((seq, stamp, kind, module, text, size))
                added += size
                seq += 1
            last = seq - 1
            with self._transaction():
                self._db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._set_meta(_LAST_SEQ, last)
            self._last_seq = last
            self._bytes += added
            self._count += len(rows)
            if self._bytes > self._max_bytes:
                self._drop_beyond_max_bytes()
            if stamp - self._last_ttl_check > _TTL_CHECK_INTERVAL:
                self._drop_expired(stamp)
        return first, last

    def pending(self, limit: int, *, after: int = 0) -> list[dict[str, Any]]:
        """Up to `limit` records with seq > `after`, oldest first, in the shape of docs/agent.md."""
        loads = orjson.loads
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, ts, kind, module, data FROM records WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()
        return [{"seq": s, "ts": t, "kind": k, "module": m, "data": loads(d)} for s, t, k, m, d in rows]

    def acknowledge(self, last_seq: int) -> None:
        """Forget every record up to `last_seq`: the broker has them."""
        with self._lock:
            with self._transaction():
                freed, count = self._db.execute(
                    "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM records WHERE seq <= ?", (last_seq,)
                ).fetchone()
                self._db.execute("DELETE FROM records WHERE seq <= ?", (last_seq,))
            self._bytes -= int(freed)
            self._count -= int(count)

    def enforce_bounds(self, *, now: float | None = None) -> None:
        """Drop, and count, records older than the time to live and the oldest beyond the size bound."""
        with self._lock:
            self._drop_expired(time.time() if now is None else now)
            if self._bytes > self._max_bytes:
                self._drop_beyond_max_bytes()

    def dropped(self) -> dict[str, int]:
        with self._lock:
            return dict(self._dropped)

    def pending_count(self) -> int:
        return self._count

    def pending_bytes(self) -> int:
        return self._bytes

    def last_sequence(self) -> int:
        return self._last_seq

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- internals (lock held) -------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _count_drop(self, reason: str, count: int, freed: int) -> None:
        key = _DROPPED[reason]
        self._set_meta(key, self._dropped[reason] + count)
        self._dropped[reason] += count
        self._bytes -= freed
        self._count -= count

    def _drop_expired(self, now: float) -> None:
        self._last_ttl_check = now
        cutoff = now - self._ttl
        oldest = self._db.execute("SELECT MIN(ts) FROM records").fetchone()[0]
        if oldest is None or oldest >= cutoff:
            return
        with self._transaction():
            freed, count = self._db.execute(
                "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM records WHERE ts < ?", (cutoff,)
            ).fetchone()
            self._db.execute("DELETE FROM records WHERE ts < ?", (cutoff,))
            self._count_drop("ttl", int(count), int(freed))

    def _drop_beyond_max_bytes(self) -> None:
        excess = self._bytes - self._max_bytes
        freed = count = 0
        last = 0
        while freed < excess:
            rows = self._db.execute(
                "SELECT seq, size FROM records WHERE seq > ? ORDER BY seq LIMIT 1000", (last,)
            ).fetchall()
            if not rows:
                break
            for seq, size in rows:
                freed += size
                count += 1
                last = seq
                if freed >= excess:
                    break
        if not count:
            return
        with self._transaction():
            self._db.execute("DELETE FROM records WHERE seq <= ?", (last,))
            self._count_drop("maxBytes", count, freed)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on error; sqlite3 errors become AgentError."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if kind is None:
            self._db.execute("COMMIT")
            return
        self._db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise AgentError(f"telemetry spool write failed: {exc}") from exc
