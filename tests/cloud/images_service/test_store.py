"""The image registry and activities in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from edgewise.cloud.errors import ConflictError, InvalidInputError, ModelInUseError, NotFoundError
from edgewise.cloud.store.database import MIGRATIONS, Database, create_engine
from edgewise.cloud.store.records import ActivityStatus, FileEntry
from edgewise.cloud.store.sql import SqlStore

from tests.cloud.store.support import digest_of

MANIFEST = digest_of("manifest")
CONFIG = digest_of("config")
MEDIA = "application/vnd.oci.image.manifest.v1+json"


def _model(store: SqlStore, name: str = "digits") -> int:
    files = [FileEntry(path="model.onnx", digest=digest_of(name), size=10)]
    return store.register_model(name=name, files=files, format="onnx", framework=None).version


def _image(store: SqlStore, name: str = "digits-img", **kwargs: object) -> object:
    values: dict[str, object] = {
        "manifest_digest": MANIFEST,
        "config_digest": CONFIG,
        "size": 123,
        "media_type": MEDIA,
        "models": [("digits", 1)],
    }
    values.update(kwargs)
    return store.register_image(name=name, **values)  # type: ignore[arg-type]


def test_versions_count_up_and_images_reference_their_models(store: SqlStore) -> None:
    _model(store)
    activity = store.create_activity(kind="image-build", parameters={"image": "digits-img"})
    first = store.register_image(
        name="digits-img", manifest_digest=MANIFEST, config_digest=CONFIG, size=123, media_type=MEDIA,
        models=[("digits", 1)], activity_id=activity.id, tags={"stage": "dev"},
    )  # fmt: skip
    second = _image(store)
    assert (first.version, second.version) == (1, 2)  # type: ignore[attr-defined]
    assert first.models == ["digits:1"] and first.activity_id == activity.id and first.tags == {"stage": "dev"}
    assert store.get_image("digits-img") == second
    assert store.get_image("digits-img", 1) == first
    assert [i.version for i in store.list_images(name="digits-img").items] == [2, 1]
    assert [i.version for i in store.list_images(tags={"stage": "dev"}).items] == [1]
    assert [i.version for i in store.list_images(tags={"stage": None}).items] == [1]
    refs = store.list_model_references("digits", 1)
    assert sorted((r.kind, r.name, r.active) for r in refs) == [
        ("image", "digits-img:1", True),
        ("image", "digits-img:2", True),
    ]
    # image references are informational: the model version can still be deleted
    store.delete_model("digits", 1)
    assert store.get_image("digits-img", 1).models == ["digits:1"]


def test_unknown_model_leaves_no_image(store: SqlStore) -> None:
    with pytest.raises(NotFoundError, match="no model named 'digits'"):
        _image(store)
    _model(store)
    with pytest.raises(NotFoundError, match="has no version 7"):
        _image(store, models=[("digits", 7)])
    with pytest.raises(NotFoundError, match="no images are built yet"):
        store.get_image("digits-img")
    assert store.list_images().items == []
    with pytest.raises(InvalidInputError):
        _image(store, name="../bad")


def test_delete_refused_while_a_deployment_uses_the_image(store: SqlStore) -> None:
    _model(store)
    _image(store)
    store.add_image_reference("digits-img", 1, kind="deployment", ref="berlin-prod")
    assert [(r.kind, r.name, r.active) for r in store.list_image_references("digits-img", 1)] == [
        ("deployment", "berlin-prod", True)
    ]
    with pytest.raises(ConflictError, match="berlin-prod"):
        store.delete_image("digits-img", 1)
    # a deployment of the image does not hold the model (only deployments of the model do)
    with pytest.raises(ModelInUseError):
        store.add_model_reference("digits", 1, kind="deployment", ref="direct")
        store.delete_model("digits", 1)
    store.set_model_reference_active("deployment", "berlin-prod", False)
    store.delete_image("digits-img", 1)
    with pytest.raises(NotFoundError, match="all were deleted"):
        store.get_image("digits-img", 1)
    assert [(r.kind, r.name) for r in store.list_model_references("digits", 1)] == [("deployment", "direct")]


def test_activities_move_on_and_end_once(store: SqlStore) -> None:
    activity = store.create_activity(kind="image-build", parameters={"image": "x"})
    assert activity.status is ActivityStatus.QUEUED and activity.progress == 0.0 and activity.started_at is None
    running = store.update_activity(activity.id, status=ActivityStatus.RUNNING, progress=0.25, message="layers")
    assert running.status is ActivityStatus.RUNNING and running.started_at is not None and running.message == "layers"
    with pytest.raises(InvalidInputError, match="fraction"):
        store.update_activity(activity.id, progress=1.5)
    done = store.update_activity(activity.id, status=ActivityStatus.SUCCEEDED, result="x:1")
    assert done.progress == 1.0 and done.ended_at is not None and done.result == "x:1"
    with pytest.raises(ConflictError, match="already ended"):
        store.update_activity(activity.id, progress=0.5)
    assert store.get_activity(activity.id) == done
    with pytest.raises(NotFoundError):
        store.get_activity("nope")


def test_unfinished_activities_fail_with_the_reason(store: SqlStore) -> None:
    queued = store.create_activity(kind="image-build")
    running = store.create_activity(kind="image-build")
    store.update_activity(running.id, status=ActivityStatus.RUNNING)
    ended = store.create_activity(kind="image-build")
    store.update_activity(ended.id, status=ActivityStatus.FAILED, error="bad")
    assert store.fail_unfinished_activities("stopped") == sorted([queued.id, running.id])
    assert store.get_activity(queued.id).status is ActivityStatus.FAILED
    assert store.get_activity(running.id).error == "stopped"
    assert store.get_activity(ended.id).error == "bad"
    failed = store.list_activities(status=ActivityStatus.FAILED)
    assert {a.id for a in failed.items} == {queued.id, running.id, ended.id}
    page = store.list_activities(kind="image-build", page_size=2)
    assert len(page.items) == 2 and page.next_page_token is not None


def test_migration_keeps_model_references(db_url: str) -> None:
    database = Database(engine=create_engine(db_url))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with database.write() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    with database.write() as conn:
        conn.execute(sa.text("INSERT INTO registered_models (name, last_version, created_at) VALUES ('m', 1, 1.0)"))
        conn.execute(
            sa.text(
                "INSERT INTO model_versions (model_id, version, created_at, format, files, properties) "
                "SELECT id, 1, 1.0, 'onnx', '[]', '{}' FROM registered_models"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO model_references (version_id, kind, ref, active, created_at) "
                "SELECT id, 'deployment', 'old-deploy', true, 2.0 FROM model_versions"
            )
        )
    database.dispose()
    store = SqlStore.open(db_url)
    try:
        refs = store.list_model_references("m", 1)
        assert [(r.kind, r.name, r.active) for r in refs] == [("deployment", "old-deploy", True)]
        with pytest.raises(ModelInUseError, match="old-deploy"):
            store.delete_model("m", 1)
    finally:
        store.close()
