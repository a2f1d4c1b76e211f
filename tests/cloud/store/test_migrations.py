"""Migrations run at open: a fresh database gets the whole schema, re-opening is harmless, data survives."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.store import migrations
from edgewise.cloud.store.schema import metadata
from edgewise.cloud.store.sql import SqlStore

from tests.cloud.store.support import SNAPSHOT, SPEC

# The newest revision: every migration file is named after its revision id.
HEAD = max(p.name.split("_", 1)[0] for p in (Path(migrations.__file__).parent / "versions").glob("[0-9]*_*.py"))


def _tables(url: str) -> tuple[set[str], list[str]]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            names = set(sa.inspect(conn).get_table_names())
            revision = [str(r) for r in conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()]
    finally:
        engine.dispose()
    return names, revision


def test_fresh_database_gets_every_table(db_url: str) -> None:
    SqlStore.open(db_url).close()
    names, revision = _tables(db_url)
    assert set(metadata.tables) <= names
    assert revision == [HEAD]


def test_reopen_is_idempotent_and_keeps_data(db_url: str) -> None:
    store = SqlStore.open(db_url)
    run = store.create_run(experiment="kept", spec=SPEC, snapshot=SNAPSHOT, git=None)
    store.close()
    for _ in range(2):
        store = SqlStore.open(db_url)
        assert store.get_run(run.id) == run
        store.close()
    assert _tables(db_url)[1] == [HEAD]


def test_concurrent_opens_migrate_once(db_url: str) -> None:
    errors: list[BaseException] = []
    opened: list[SqlStore] = []

    def open_store() -> None:
        try:
            opened.append(SqlStore.open(db_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in opened:
        store.close()
    assert errors == []
    assert _tables(db_url)[1] == [HEAD]


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "mysql://u@127.0.0.1/db", "not a url"])
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidInputError):
        SqlStore.open(url)
