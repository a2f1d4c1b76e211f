"""Fixtures of the store tests: a real database per test, SQLite in a temporary folder or a fresh PostgreSQL
database (when EDGEWISE_TEST_POSTGRES_URL names a server where the user may create databases)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from edgewise.cloud.store.blobs import BlobStore
from edgewise.cloud.store.sql import SqlStore

POSTGRES_ENV = "EDGEWISE_TEST_POSTGRES_URL"


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database that is thrown away after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'workspace.db'}"
        return
    admin = os.environ.get(POSTGRES_ENV)
    if not admin:
        pytest.skip(
            f"PostgreSQL tests need {POSTGRES_ENV}, e.g. postgresql://edgewise:edgewise@127.0.0.1:5432/postgres"
        )
    name = f"edgewise_test_{secrets.token_hex(6)}"
    with psycopg.connect(_libpq(admin), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    try:
        yield sa.make_url(_libpq(admin)).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq(admin), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    opened = SqlStore.open(db_url)
    yield opened
    opened.close()


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(root=tmp_path / "blobs")
