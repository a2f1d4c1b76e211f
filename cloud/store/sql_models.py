"""The model registry part of `SqlStore`: versions, tags, search and the references that guard deletion.

Versions count from 1 per model name. The counter lives in the model's `registered_models` row and is created
or bumped by one INSERT ... ON CONFLICT DO UPDATE ... RETURNING in the transaction that inserts the version:
concurrent registrations (threads, processes, several services on one PostgreSQL) queue on that row and each
gets the next number. Numbers of deleted versions are never handed out again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import sqlalchemy as sa
from edgewise.cloud.errors import InvalidInputError, ModelInUseError, NotFoundError
from edgewise.cloud.names import check_name
from edgewise.cloud.store.database import Database, check_page_size, decode_page_token, encode_page_token
from edgewise.cloud.store.records import FileEntry, ModelReference, ModelVersion, Page
from edgewise.cloud.store.schema import (
    model_references,
    model_tags,
    model_versions,
    registered_models,
)
from edgewise.cloud.store.values import (
    check_files,
    check_key,
    check_tags,
    dumps,
    loads,
    no_such_version,
    now,
    tags_by_owner,
)

DEPLOYMENT = "deployment"

_VERSION_SELECT = sa.select(model_versions, registered_models.c.name.label("model_name")).join(
    registered_models, registered_models.c.id == model_versions.c.model_id
)


@dataclass(frozen=True)
class _RegisterStatements:
    """Driver-level SQL of a registration, built once per store: the statements are few and simple, and running
    them through SQLAlchemy's compiled-statement machinery cost more than SQLite took to execute them."""

    run_experiment: str
    run_files: str
    run_outputs: str
    bump_version: str
    insert_version: str
    insert_tag: str

    @classmethod
    def build(cls, dialect: sa.Dialect) -> _RegisterStatements:
        q = dialect.identifier_preparer.quote
        m = "?" if dialect.paramstyle == "qmark" else "%s"

        def insert(table: str, columns: Sequence[str]) -> str:
            names, markers = ", ".join(q(c) for c in columns), ", ".join([m] * len(columns))
            return f"INSERT INTO {q(table)} ({names}) VALUES ({markers})"

        path = q("path")
        return cls(
            run_experiment=f"SELECT e.{q('name')} FROM {q('runs')} r JOIN {q('experiments')} e "
            f"ON e.{q('id')} = r.{q('experiment_id')} WHERE r.{q('id')} = {m}",
            # The file, or the files under the folder (LIKE, not a range: PostgreSQL's collation may not order
            # by bytes; SQLite's LIKE ignores case, so the caller keeps exact matches only).
            run_files=f"SELECT {path}, {q('digest')}, {q('size')} FROM {q('artifacts')} WHERE {q('run_id')} = {m} "
            f"AND ({path} = {m} OR {path} LIKE {m} ESCAPE '!') ORDER BY {path}",
            run_outputs=f"SELECT {path} FROM {q('artifacts')} WHERE {q('run_id')} = {m} "
            f"AND {path} LIKE {m} ORDER BY {path} LIMIT 10",
            # One statement creates the model on first use or bumps its counter; the row lock it takes queues
            # concurrent registrations of the same name, so each gets the next number.
            bump_version=insert("registered_models", ("name", "last_version", "created_at"))
            + f" ON CONFLICT ({q('name')}) DO UPDATE SET {q('last_version')} = "
            f"{q('registered_models')}.{q('last_version')} + 1 RETURNING {q('id')}, {q('last_version')}",
            insert_version=insert("model_versions", _VERSION_COLUMNS) + f" RETURNING {q('id')}",
            insert_tag=insert("model_tags", ("version_id", "key", "value")),
        )


_VERSION_COLUMNS = (
    "model_id",
    "version",
    "created_at",
    "format",
    "framework",
    "description",
    "files",
    "run_id",
    "experiment",
    "properties",
)


@dataclass(frozen=True, kw_only=True)
class _NewVersion:
    """A checked version, ready to insert."""

    name: str
    files: list[FileEntry]
    format: str
    framework: str | None
    run_id: str | None
    experiment: str | None
    description: str | None
    tags: dict[str, str]
    properties: dict[str, str]


class SqlModelRegistry:
    _db: Database
    _register_cache: _RegisterStatements | None = None

    def _register_statements(self) -> _RegisterStatements:
        if self._register_cache is None:
            self._register_cache = _RegisterStatements.build(self._db.engine.dialect)
        return self._register_cache

    def register_model(
        self,
        *,
        name: str,
        files: list[FileEntry],
        format: str,
        framework: str | None,
        run_id: str | None = None,
        experiment: str | None = None,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> ModelVersion:
        """Register the next version of model `name` (1 for a new name)."""
        check_name("model", name)
        checked_files = check_files(files, what="model file")
        if not checked_files:
            raise InvalidInputError(f"model {name!r} needs at least one file")
        checked_tags = check_tags(tags)
        props = check_tags(properties, kind="property name")
        check_key("model format", format)
        sql = self._register_statements()
        with self._db.write() as conn, _cursor(conn) as cursor:
            if run_id is not None:
                row = cursor.execute(sql.run_experiment, (run_id,)).fetchone()
                if row is None:
                    raise NotFoundError(f"no run {run_id!r} to register model {name!r} from")
                experiment = experiment or str(row[0])
            new = _NewVersion(
                name=name,
                files=checked_files,
                format=format,
                framework=framework,
                run_id=run_id,
                experiment=experiment,
                description=description,
                tags=checked_tags,
                properties=props,
            )
            return _insert_version(cursor, sql, new)

    def register_run_model(
        self,
        *,
        name: str,
        run_id: str,
        path: str,
        describe: Callable[[list[FileEntry]], tuple[str, str | None]],
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> ModelVersion:
        """Register the file or folder `path` (a checked relative path) of a run's files as the next version of
        `name`: finding the files and inserting the version share one transaction, the cost of a registration
        being mostly the transactions it opens. `describe(files)` gives the (format, framework) to record."""
        check_name("model", name)
        checked_tags = check_tags(tags)
        props = check_tags(properties, kind="property name")
        base = PurePosixPath(path).parent
        sql = self._register_statements()
        with self._db.write() as conn, _cursor(conn) as cursor:
            row = cursor.execute(sql.run_experiment, (run_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no run {run_id!r} to register model {name!r} from")
            folder = path + "/"
            pattern = "".join("!" + c if c in "!%_" else c for c in folder) + "%"
            found = [
                row
                for row in cursor.execute(sql.run_files, (run_id, path, pattern)).fetchall()
                if row[0] == path or row[0].startswith(folder)
            ]
            if not found:
                rows = cursor.execute(sql.run_outputs, (run_id, "outputs/%")).fetchall()
                outputs = [str(r[0]) for r in rows if str(r[0]).startswith("outputs/")]
                hint = f"; its outputs are: {', '.join(outputs)}" if outputs else "; it has no outputs"
                raise NotFoundError(f"run {run_id} has no file or folder {path!r}{hint}")
            files = [
                FileEntry(path=str(PurePosixPath(found_path).relative_to(base)), digest=digest, size=int(size))
                for found_path, digest, size in found
            ]
            format, framework = describe(files)
            check_key("model format", format)
            new = _NewVersion(
                name=name,
                files=check_files(files, what="model file"),
                format=format,
                framework=framework,
                run_id=run_id,
                experiment=str(row[0]),
                description=description,
                tags=checked_tags,
                properties=props,
            )
            return _insert_version(cursor, sql, new)

    def get_model(self, name: str, version: int | None = None) -> ModelVersion:
        """One version of a model; the newest when `version` is None."""
        with self._db.read() as conn:
            version_id = self._find_version(conn, name, version)
            row = conn.execute(_VERSION_SELECT.where(model_versions.c.id == version_id)).one()
            return _version_records(conn, [row])[0]

    def list_models(
        self,
        *,
        name: str | None = None,
        tags: Mapping[str, str | None] | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[ModelVersion]:
        """Model versions, newest first; every tag must match (a None value matches any value of the key)."""
        offset, size = decode_page_token(page_token), check_page_size(page_size)
        stmt = _VERSION_SELECT
        if name is not None:
            stmt = stmt.where(registered_models.c.name == name)
        for key, value in (tags or {}).items():
            match = sa.exists().where(model_tags.c.version_id == model_versions.c.id, model_tags.c.key == key)
            stmt = stmt.where(match if value is None else match.where(model_tags.c.value == value))
        stmt = stmt.order_by(model_versions.c.created_at.desc(), model_versions.c.id.desc())
        with self._db.read() as conn:
            rows = conn.execute(stmt.offset(offset).limit(size + 1)).all()
            items = _version_records(conn, rows[:size])
        return Page(items=items, next_page_token=encode_page_token(offset + size) if len(rows) > size else None)

    def set_model_tags(
        self, name: str, version: int, *, set: Mapping[str, str] | None = None, remove: Sequence[str] = ()
    ) -> ModelVersion:
        """Add or replace the tags in `set`, then drop the keys in `remove` (missing keys are ignored)."""
        checked = check_tags(set)
        if isinstance(remove, str):
            raise InvalidInputError("remove takes a list of tag keys, not a single text")
        with self._db.write() as conn:
            version_id = self._find_version(conn, name, version)
            if checked:
                stmt = self._db.insert(model_tags)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["version_id", "key"], set_={"value": stmt.excluded.value}
                )
                conn.execute(stmt, [{"version_id": version_id, "key": k, "value": v} for k, v in checked.items()])
            if remove:
                conn.execute(
                    sa.delete(model_tags).where(
                        model_tags.c.version_id == version_id, model_tags.c.key.in_(list(remove))
                    )
                )
            row = conn.execute(_VERSION_SELECT.where(model_versions.c.id == version_id)).one()
            return _version_records(conn, [row])[0]

    def delete_model(self, name: str, version: int) -> None:
        """Delete a version; refused while an active deployment references it."""
        with self._db.write() as conn:
            version_id = self._find_version(conn, name, version, lock=True)
            users = conn.execute(
                sa.select(model_references.c.ref)
                .where(
                    model_references.c.version_id == version_id,
                    model_references.c.kind == DEPLOYMENT,
                    model_references.c.active,
                )
                .order_by(model_references.c.ref)
            ).scalars()
            in_use = list(users)
            if in_use:
                raise ModelInUseError(
                    f"model {name}:{version} is used by the active deployment(s) {', '.join(in_use)}; "
                    "delete them or move them to another version first"
                )
            conn.execute(sa.delete(model_tags).where(model_tags.c.version_id == version_id))
            conn.execute(sa.delete(model_references).where(model_references.c.version_id == version_id))
            conn.execute(sa.delete(model_versions).where(model_versions.c.id == version_id))

    def add_model_reference(self, name: str, version: int, *, kind: str, ref: str) -> None:
        """Record that `ref` (an image, a deployment) uses a version; the reference starts active."""
        check_key("reference kind", kind)
        check_key("reference", ref)
        with self._db.write() as conn:
            version_id = self._find_version(conn, name, version, lock=True)
            stmt = self._db.insert(model_references).values(
                version_id=version_id, kind=kind, ref=ref, active=True, created_at=now()
            )
            conn.execute(
                stmt.on_conflict_do_update(index_elements=["version_id", "kind", "ref"], set_={"active": True})
            )

    def set_model_reference_active(self, kind: str, ref: str, active: bool) -> None:
        """Activate or deactivate `ref` on every version it points at."""
        with self._db.write() as conn:
            conn.execute(
                sa.update(model_references)
                .where(model_references.c.kind == kind, model_references.c.ref == ref)
                .values(active=bool(active))
            )

    def list_model_references(self, name: str, version: int) -> list[ModelReference]:
        with self._db.read() as conn:
            version_id = self._find_version(conn, name, version)
            rows = conn.execute(
                sa.select(model_references)
                .where(model_references.c.version_id == version_id)
                .order_by(model_references.c.created_at, model_references.c.kind, model_references.c.ref)
            ).all()
        return [ModelReference(kind=r.kind, name=r.ref, active=bool(r.active), created_at=r.created_at) for r in rows]

    def _find_version(self, conn: sa.Connection, name: str, version: int | None, *, lock: bool = False) -> int:
        """The row id of a model version, or NotFoundError saying which models or versions exist."""
        model = conn.execute(sa.select(registered_models.c.id).where(registered_models.c.name == name)).first()
        if model is None:
            known = conn.execute(sa.select(registered_models.c.name).order_by(registered_models.c.name).limit(21))
            names = list(known.scalars())
            listing = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            raise NotFoundError(
                f"no model named {name!r}; registered models: {listing}"
                if names
                else f"no model named {name!r}; no models are registered yet"
            )
        stmt = sa.select(model_versions.c.id).where(model_versions.c.model_id == model.id)
        if version is None:
            stmt = stmt.order_by(model_versions.c.version.desc()).limit(1)
        else:
            stmt = stmt.where(model_versions.c.version == version)
        if lock:
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).first()
        if row is None:
            versions = conn.execute(
                sa.select(model_versions.c.version)
                .where(model_versions.c.model_id == model.id)
                .order_by(model_versions.c.version)
            ).scalars()
            raise no_such_version("model", name, version, versions)
        return int(row.id)


def _insert_version(cursor: Any, sql: _RegisterStatements, new: _NewVersion) -> ModelVersion:
    stamp = now()
    model_id, version = cursor.execute(sql.bump_version, (new.name, 1, stamp)).fetchone()
    files = dumps([f.to_dict() for f in new.files], what="the model files")
    properties = dumps(new.properties, what="the model properties")
    values = (model_id, version, stamp, new.format, new.framework, new.description, files, new.run_id)
    (version_id,) = cursor.execute(sql.insert_version, (*values, new.experiment, properties)).fetchone()
    if new.tags:
        cursor.executemany(sql.insert_tag, [(version_id, k, v) for k, v in new.tags.items()])
    return ModelVersion(
        name=new.name,
        version=int(version),
        created_at=stamp,
        format=new.format,
        framework=new.framework,
        description=new.description,
        files=new.files,
        run_id=new.run_id,
        experiment=new.experiment,
        tags=new.tags,
        properties=new.properties,
    )


@contextmanager
def _cursor(conn: sa.Connection) -> Iterator[Any]:
    """A DB-API cursor in the connection's transaction."""
    cursor = conn.connection.cursor()
    try:
        yield cursor
    finally:
        cursor.close()


def _version_records(conn: sa.Connection, rows: Sequence[sa.Row[Any]]) -> list[ModelVersion]:
    tags = tags_by_owner(conn, model_tags.c.version_id, [row.id for row in rows])
    result = []
    for row in rows:
        m = row._mapping
        result.append(
            ModelVersion(
                name=m["model_name"],
                version=m["version"],
                created_at=m["created_at"],
                format=m["format"],
                framework=m["framework"],
                description=m["description"],
                files=[FileEntry.from_dict(f) for f in loads(m["files"])],
                run_id=m["run_id"],
                experiment=m["experiment"],
                tags=tags[m["id"]],
                properties=dict(loads(m["properties"])),
            )
        )
    return result
