"""Alembic environment of the workspace store.

`SqlStore.open` runs the migrations programmatically and hands over its connection (already inside the
transaction that serialises concurrent starts) through `config.attributes["connection"]`; no alembic.ini
is needed. For work on new revisions, the Alembic command line works too with a config whose
`script_location` is this folder and `-x url=sqlite:///path/workspace.db`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from edgewise.cloud.store.schema import metadata


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database: alembic -x url=sqlite:///path/workspace.db upgrade head")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


_main()
