"""The workspace store: metadata in SQL (`SqlStore`), file contents as content-addressed blobs (`BlobStore`).

The records (`edgewise.cloud.store.records`) are shared with the clients, which should not pay for importing
SQLAlchemy: the store classes are therefore loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgewise.cloud.store.blobs import BlobStore, check_digest
    from edgewise.cloud.store.sql import SqlStore

__all__ = ["BlobStore", "SqlStore", "check_digest"]

_LAZY = {
    "BlobStore": "edgewise.cloud.store.blobs",
    "check_digest": "edgewise.cloud.store.blobs",
    "SqlStore": "edgewise.cloud.store.sql",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
