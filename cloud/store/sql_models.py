"""The model registry part of `SqlStore`: versions, tags, search and the references that guard deletion.

Versions count from 1 per model name. The counter lives in the model's `registered_models` row and is bumped
with UPDATE ... RETURNING in the transaction that inserts the version: concurrent registrations (threads,
processes, several services on one PostgreSQL) queue on that row and each gets the next number. Numbers of
deleted versions are never handed out again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from edgewise.cloud.errors import InvalidInputError, ModelInUseError, NotFoundError
from edgewise.cloud.names import check_name
from edgewise.cloud.store.database import Database, check_page_size, decode_page_token, encode_page_token
from edgewise.cloud.store.records import FileEntry, ModelReference, ModelVersion, Page
from edgewise.cloud.store.schema import (
    experiments,
    model_references,
    model_tags,
    model_versions,
    registered_models,
    runs,
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
    """Built once per store: registrations then only bind values (building statements cost more than running them)."""

    run_experiment: Any
    ensure_model: Any
    bump_version: Any
    insert_version: Any


class SqlModelRegistry:
    _db: Database
    _register_cache: _RegisterStatements | None = None

    def _register_statements(self) -> _RegisterStatements:
        if self._register_cache is None:
            self._register_cache = _RegisterStatements(
                run_experiment=sa.select(experiments.c.name)
                .join(runs, runs.c.experiment_id == experiments.c.id)
                .where(runs.c.id == sa.bindparam("run_id")),
                ensure_model=self._db.insert(registered_models).on_conflict_do_nothing(index_elements=["name"]),
                bump_version=sa.update(registered_models)
                .where(registered_models.c.name == sa.bindparam("model_name"))
                .values(last_version=registered_models.c.last_version + 1)
                .returning(registered_models.c.id, registered_models.c.last_version),
                insert_version=model_versions.insert().returning(model_versions.c.id),
            )
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
        stamp = now()
        statements = self._register_statements()
        with self._db.write() as conn:
            if run_id is not None:
                row = conn.execute(statements.run_experiment, {"run_id": run_id}).first()
                if row is None:
                    raise NotFoundError(f"no run {run_id!r} to register model {name!r} from")
                experiment = experiment or str(row.name)
            conn.execute(statements.ensure_model, {"name": name, "last_version": 0, "created_at": stamp})
            model_id, version = conn.execute(statements.bump_version, {"model_name": name}).one()
            version_id = conn.execute(
                statements.insert_version,
                {
                    "model_id": model_id,
                    "version": version,
                    "created_at": stamp,
                    "format": format,
                    "framework": framework,
                    "description": description,
                    "files": dumps([f.to_dict() for f in checked_files], what="the model files"),
                    "run_id": run_id,
                    "experiment": experiment,
                    "properties": dumps(props, what="the model properties"),
                },
            ).scalar_one()
            if checked_tags:
                conn.execute(
                    model_tags.insert(),
                    [{"version_id": version_id, "key": k, "value": v} for k, v in checked_tags.items()],
                )
        return ModelVersion(
            name=name,
            version=int(version),
            created_at=stamp,
            format=format,
            framework=framework,
            description=description,
            files=checked_files,
            run_id=run_id,
            experiment=experiment,
            tags=checked_tags,
            properties=props,
        )

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
