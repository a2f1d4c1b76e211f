"""Small builders shared by the store tests."""

from __future__ import annotations

import hashlib

from edgewise.cloud.store.records import FileEntry, RunSpec


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def entry(path: str, content: str | None = None) -> FileEntry:
    body = path if content is None else content
    return FileEntry(path=path, digest=digest_of(body), size=len(body))


SPEC = RunSpec(script="train.py", arguments=["--lr", "0.1"], requirements="numpy\n")
SNAPSHOT = [entry("train.py"), entry("data/config.yml")]
