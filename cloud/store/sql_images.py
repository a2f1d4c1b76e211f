"""The image registry part of `SqlStore`: built images by name and version, their tags and references.

Versions count from 1 per image name, with the counter bumped in the inserting transaction as for models.
An image records a reference of kind "image" on every model version it holds (informational: only
deployments keep a model version from being deleted) and drops those references when it is deleted. A
deployment that uses an image references it through the same table; while active, the image stays.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from edgewise.cloud.errors import ConflictError, InvalidInputError, NotFoundError
from edgewise.cloud.names import check_name
from edgewise.cloud.store.database import Database, check_page_size, decode_page_token, encode_page_token
from edgewise.cloud.store.records import Image, ModelReference, Page
from edgewise.cloud.store.schema import image_repositories, image_tags, images, model_references
from edgewise.cloud.store.values import check_key, check_tags, dumps, loads, no_such_version, now, tags_by_owner

IMAGE = "image"
DEPLOYMENT = "deployment"

_IMAGE_SELECT = sa.select(images, image_repositories.c.name.label("image_name")).join(
    image_repositories, image_repositories.c.id == images.c.repository_id
)


class SqlImages:
    _db: Database
    _find_version: Callable[..., int]  # from SqlModelRegistry: the row id of a model version

    def register_image(
        self,
        *,
        name: str,
        manifest_digest: str,
        config_digest: str,
        size: int,
        media_type: str,
        models: Sequence[tuple[str, int]],
        model_digest: str | None = None,
        activity_id: str | None = None,
        base: str | None = None,
        tags: Mapping[str, str] | None = None,
        kind: str = "oci",
        details: Mapping[str, Any] | None = None,
    ) -> Image:
        """Record the next version of image `name` (1 for a new name) and reference the model versions in it."""
        check_name("image", name)
        checked_tags = check_tags(tags)
        if not isinstance(size, int) or size < 0:
            raise InvalidInputError(f"invalid image size {size!r}")
        stamp = now()
        model_refs = [f"{model}:{version}" for model, version in models]
        with self._db.write() as conn:
            version_ids = [self._find_version(conn, model, version, lock=True) for model, version in models]
            insert = self._db.insert(image_repositories).values(name=name, last_version=0, created_at=stamp)
            conn.execute(insert.on_conflict_do_nothing(index_elements=["name"]))
            repository_id, version = conn.execute(
                sa.update(image_repositories)
                .where(image_repositories.c.name == name)
                .values(last_version=image_repositories.c.last_version + 1)
                .returning(image_repositories.c.id, image_repositories.c.last_version)
            ).one()
            image_id = conn.execute(
                images.insert()
                .values(
                    repository_id=repository_id,
                    version=version,
                    created_at=stamp,
                    manifest_digest=manifest_digest,
                    config_digest=config_digest,
                    size=size,
                    media_type=media_type,
                    model_digest=model_digest,
                    models=dumps(model_refs, what="the image's models"),
                    activity_id=activity_id,
                    base=base,
                    kind=kind,
                    details=dumps(dict(details), what="the image's details") if details else None,
                )
                .returning(images.c.id)
            ).scalar_one()
            if checked_tags:
                conn.execute(
                    image_tags.insert(), [{"image_id": image_id, "key": k, "value": v} for k, v in checked_tags.items()]
                )
            ref = f"{name}:{version}"
            for version_id in sorted(set(version_ids)):
                conn.execute(
                    model_references.insert().values(
                        version_id=version_id, kind=IMAGE, ref=ref, active=True, created_at=stamp
                    )
                )
            row = conn.execute(_IMAGE_SELECT.where(images.c.id == image_id)).one()
            return _image_records(conn, [row])[0]

    def get_image(self, name: str, version: int | None = None) -> Image:
        """One version of an image; the newest when `version` is None."""
        with self._db.read() as conn:
            image_id = _find_image(conn, name, version)
            row = conn.execute(_IMAGE_SELECT.where(images.c.id == image_id)).one()
            return _image_records(conn, [row])[0]

    def list_images(
        self,
        *,
        name: str | None = None,
        tags: Mapping[str, str | None] | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[Image]:
        """Images, newest first; every tag must match (a None value matches any value of the key)."""
        offset, size = decode_page_token(page_token), check_page_size(page_size)
        stmt = _IMAGE_SELECT
        if name is not None:
            stmt = stmt.where(image_repositories.c.name == name)
        for key, value in (tags or {}).items():
            match = sa.exists().where(image_tags.c.image_id == images.c.id, image_tags.c.key == key)
            stmt = stmt.where(match if value is None else match.where(image_tags.c.value == value))
        stmt = stmt.order_by(images.c.created_at.desc(), images.c.id.desc())
        with self._db.read() as conn:
            rows = conn.execute(stmt.offset(offset).limit(size + 1)).all()
            items = _image_records(conn, rows[:size])
        return Page(items=items, next_page_token=encode_page_token(offset + size) if len(rows) > size else None)

    def delete_image(self, name: str, version: int) -> None:
        """Delete an image version; refused while an active deployment references it."""
        with self._db.write() as conn:
            image_id = _find_image(conn, name, version, lock=True)
            users = conn.execute(
                sa.select(model_references.c.ref)
                .where(
                    model_references.c.image_id == image_id,
                    model_references.c.kind == DEPLOYMENT,
                    model_references.c.active,
                )
                .order_by(model_references.c.ref)
            ).scalars()
            in_use = list(users)
            if in_use:
                raise ConflictError(
                    f"image {name}:{version} is used by the active deployment(s) {', '.join(in_use)}; "
                    "delete them or move them to another image first"
                )
            conn.execute(
                sa.delete(model_references).where(
                    model_references.c.kind == IMAGE,
                    model_references.c.ref == f"{name}:{version}",
                    model_references.c.version_id.is_not(None),
                )
            )
            conn.execute(sa.delete(model_references).where(model_references.c.image_id == image_id))
            conn.execute(sa.delete(image_tags).where(image_tags.c.image_id == image_id))
            conn.execute(sa.delete(images).where(images.c.id == image_id))

    def add_image_reference(self, name: str, version: int, *, kind: str, ref: str) -> None:
        """Record that `ref` (a deployment) uses an image version; the reference starts active."""
        check_key("reference kind", kind)
        check_key("reference", ref)
        with self._db.write() as conn:
            image_id = _find_image(conn, name, version, lock=True)
            stmt = self._db.insert(model_references).values(
                image_id=image_id, kind=kind, ref=ref, active=True, created_at=now()
            )
            conn.execute(stmt.on_conflict_do_update(index_elements=["image_id", "kind", "ref"], set_={"active": True}))

    def list_image_references(self, name: str, version: int) -> list[ModelReference]:
        with self._db.read() as conn:
            image_id = _find_image(conn, name, version)
            rows = conn.execute(
                sa.select(model_references)
                .where(model_references.c.image_id == image_id)
                .order_by(model_references.c.created_at, model_references.c.kind, model_references.c.ref)
            ).all()
        return [ModelReference(kind=r.kind, name=r.ref, active=bool(r.active), created_at=r.created_at) for r in rows]


def _find_image(conn: sa.Connection, name: str, version: int | None, *, lock: bool = False) -> int:
    """The row id of an image version, or NotFoundError saying which images or versions exist."""
    repository = conn.execute(sa.select(image_repositories.c.id).where(image_repositories.c.name == name)).first()
    if repository is None:
        known = list(
            conn.execute(sa.select(image_repositories.c.name).order_by(image_repositories.c.name).limit(21)).scalars()
        )
        listing = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        raise NotFoundError(
            f"no image named {name!r}; images: {listing}"
            if known
            else f"no image named {name!r}; no images are built yet (edgewise image build)"
        )
    stmt = sa.select(images.c.id).where(images.c.repository_id == repository.id)
    if version is None:
        stmt = stmt.order_by(images.c.version.desc()).limit(1)
    else:
        stmt = stmt.where(images.c.version == version)
    if lock:
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    if row is None:
        versions = conn.execute(
            sa.select(images.c.version).where(images.c.repository_id == repository.id).order_by(images.c.version)
        ).scalars()
        raise no_such_version("image", name, version, versions)
    return int(row.id)


def _image_records(conn: sa.Connection, rows: Sequence[sa.Row[Any]]) -> list[Image]:
    tags = tags_by_owner(conn, image_tags.c.image_id, [row.id for row in rows])
    result = []
    for row in rows:
        m = row._mapping
        result.append(
            Image(
                name=m["image_name"],
                version=m["version"],
                created_at=m["created_at"],
                manifest_digest=m["manifest_digest"],
                config_digest=m["config_digest"],
                size=int(m["size"]),
                media_type=m["media_type"],
                model_digest=m["model_digest"],
                models=list(loads(m["models"]) or []),
                activity_id=m["activity_id"],
                base=m["base"],
                tags=tags[m["id"]],
                kind=m["kind"],
                details=dict(loads(m["details"]) or {}) if m["details"] else {},
            )
        )
    return result
