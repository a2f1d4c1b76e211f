"""Checks and conversions of the values the store keeps: tags, file lists, JSON documents, ids, times."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from edgewise.cloud.errors import InvalidInputError, NotFoundError
from edgewise.cloud.names import check_relpath
from edgewise.cloud.store.blobs import check_digest
from edgewise.cloud.store.records import FileEntry

MAX_KEY = 256
MAX_TAG_VALUE = 5000


def new_id() -> str:
    """16 lowercase hex digits: unguessable and short enough to type."""
    return secrets.token_hex(8)


def now() -> float:
    return time.time()


def check_key(kind: str, key: object) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY or "\x00" in key:
        raise InvalidInputError(f"invalid {kind} {key!r}: use 1-{MAX_KEY} characters")
    return key


def check_tags(tags: Mapping[str, str] | None, *, kind: str = "tag key") -> dict[str, str]:
    checked: dict[str, str] = {}
    for key, value in (tags or {}).items():
        check_key(kind, key)
        if not isinstance(value, str) or len(value) > MAX_TAG_VALUE:
            raise InvalidInputError(f"the value of {key!r} must be a text of at most {MAX_TAG_VALUE} characters")
        checked[key] = value
    return checked


def check_files(entries: Iterable[FileEntry], *, what: str) -> list[FileEntry]:
    """Normalised entries with safe paths, valid digests and no path given twice."""
    result: list[FileEntry] = []
    seen: set[str] = set()
    for entry in entries:
        path = check_relpath(entry.path, what=what)
        check_digest(entry.digest)
        if not isinstance(entry.size, int) or entry.size < 0:
            raise InvalidInputError(f"{what} {path!r} has an invalid size {entry.size!r}")
        if path in seen:
            raise InvalidInputError(f"{what} {path!r} is given twice")
        seen.add(path)
        result.append(
            entry if path == entry.path else FileEntry(path=path, digest=entry.digest, size=entry.size, mode=entry.mode)
        )
    return result


def dumps(value: Any, *, what: str) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} is not JSON-serialisable ({exc})") from exc


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def tags_by_owner(conn: sa.Connection, column: sa.Column[Any], ids: Sequence[int]) -> dict[int, dict[str, str]]:
    """The tags of several versions (models or images) in one query: `column` is the tag table's owner column."""
    tags: dict[int, dict[str, str]] = {i: {} for i in ids}
    if ids:
        table = column.table
        for row in conn.execute(sa.select(table).where(column.in_(ids)).order_by(table.c.key)):
            tags[row._mapping[column.name]][row.key] = row.value
    return tags


def no_such_version(kind: str, name: str, version: int | None, versions: Iterable[int]) -> NotFoundError:
    """The error for a missing version, naming the versions that exist."""
    have = ", ".join(str(v) for v in versions)
    wanted = "any version" if version is None else f"version {version}"
    return NotFoundError(
        f"{kind} {name!r} has no {wanted}; " + (f"its versions are {have}" if have else "all were deleted")
    )
