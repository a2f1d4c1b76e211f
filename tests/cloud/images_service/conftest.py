"""Fixtures of the image registry tests: the store tests' real databases (SQLite, and PostgreSQL when
EDGEWISE_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

from tests.cloud.store.conftest import blobs, db_url, store

__all__ = ["blobs", "db_url", "store"]
