"""The model registry: versions under concurrency, tags and search, references that guard deletion."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest
from edgewise.cloud.errors import InvalidInputError, ModelInUseError, NotFoundError
from edgewise.cloud.store.records import ModelVersion, Page
from edgewise.cloud.store.sql import SqlStore

from tests.cloud.store.support import SNAPSHOT, SPEC, entry

FILES = [entry("model.onnx")]


def _register(store: SqlStore, name: str = "resnet", **kwargs: Any) -> ModelVersion:
    return store.register_model(name=name, files=FILES, format="onnx", framework="pytorch", **kwargs)


def test_versions_count_from_one_per_name(store: SqlStore) -> None:
    run = store.create_run(experiment="train", spec=SPEC, snapshot=SNAPSHOT, git=None)
    first = _register(store, run_id=run.id, description="baseline", tags={"stage": "dev"}, properties={"acc": "0.9"})
    assert (first.name, first.version, first.experiment, first.run_id) == ("resnet", 1, "train", run.id)
    assert (first.tags, first.properties, first.files, first.ref) == (
        {"stage": "dev"},
        {"acc": "0.9"},
        FILES,
        "resnet:1",
    )
    assert _register(store).version == 2
    assert _register(store, "other").version == 1
    assert store.get_model("resnet", 1) == first
    assert store.get_model("resnet").version == 2


def test_get_model_names_what_exists(store: SqlStore) -> None:
    with pytest.raises(NotFoundError, match="no models are registered yet"):
        store.get_model("resnet")
    _register(store)
    _register(store)
    with pytest.raises(NotFoundError, match="its versions are 1, 2"):
        store.get_model("resnet", 7)
    with pytest.raises(NotFoundError, match="registered models: resnet"):
        store.get_model("vgg")


def test_registration_is_checked(store: SqlStore) -> None:
    with pytest.raises(InvalidInputError, match="invalid model name"):
        _register(store, "bad name")
    with pytest.raises(InvalidInputError, match="at least one file"):
        store.register_model(name="m", files=[], format="onnx", framework=None)
    with pytest.raises(NotFoundError, match="no run"):
        _register(store, run_id="0123456789abcdef")
    with pytest.raises(NotFoundError):
        store.get_model("m")  # nothing half-registered


_OTHER_PROCESS = textwrap.dedent(
    """
    import sys
    from edgewise.cloud.store.records import FileEntry
    from edgewise.cloud.store.sql import SqlStore
    store = SqlStore.open(sys.argv[1])
    files = [FileEntry(path="model.onnx", digest="sha256:" + "b" * 64, size=1)]
    for _ in range(int(sys.argv[2])):
        store.register_model(name="busy", files=files, format="onnx", framework=None)
    store.close()
    """
)


def test_concurrent_registrations_get_unique_gap_free_versions(store: SqlStore, db_url: str) -> None:
    threads, per_thread, from_process = 8, 25, 25
    second = SqlStore.open(db_url)
    got: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def register(target: SqlStore) -> None:
        try:
            for _ in range(per_thread):
                version = _register(target, "busy").version
                with lock:
                    got.append(version)
        except BaseException as exc:
            errors.append(exc)

    process = subprocess.Popen([sys.executable, "-c", _OTHER_PROCESS, db_url, str(from_process)])
    workers = [threading.Thread(target=register, args=(store if i % 2 else second,)) for i in range(threads)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert process.wait(timeout=240) == 0
    finally:
        second.close()
        if process.poll() is None:
            process.kill()
    assert errors == []
    total = threads * per_thread + from_process
    assert len(got) == len(set(got)) == threads * per_thread
    listed: list[int] = []
    token = None
    while True:
        page = store.list_models(name="busy", page_size=100, page_token=token)
        listed.extend(v.version for v in page.items)
        if (token := page.next_page_token) is None:
            break
    assert sorted(listed) == list(range(1, total + 1))
    assert store.get_model("busy").version == total


def refs(page: Page[ModelVersion]) -> list[str]:
    return [v.ref for v in page.items]


def test_tag_search_and_tagging(store: SqlStore) -> None:
    a = _register(store, "a", tags={"stage": "prod", "team": "vision"})
    b = _register(store, "b", tags={"stage": "dev"})
    c = _register(store, "a", tags={"team": "speech"})
    assert refs(store.list_models()) == [c.ref, b.ref, a.ref]  # newest first
    assert refs(store.list_models(tags={"stage": None})) == [b.ref, a.ref]
    assert refs(store.list_models(tags={"stage": "prod"})) == [a.ref]
    assert refs(store.list_models(tags={"stage": "prod", "team": "speech"})) == []
    assert refs(store.list_models(name="a", tags={"team": None})) == [c.ref, a.ref]
    tagged = store.set_model_tags("a", 1, set={"stage": "archived", "owner": "kim"}, remove=["team", "absent"])
    assert tagged.tags == {"stage": "archived", "owner": "kim"}
    assert store.get_model("a", 1).tags == tagged.tags
    assert refs(store.list_models(tags={"stage": "archived"})) == [a.ref]
    first = store.list_models(page_size=2)
    assert len(first.items) == 2 and first.next_page_token is not None
    assert refs(store.list_models(page_size=2, page_token=first.next_page_token)) == [a.ref]
    with pytest.raises(NotFoundError):
        store.set_model_tags("a", 9, set={"x": "y"})


def test_delete_refused_while_an_active_deployment_uses_the_version(store: SqlStore) -> None:
    _register(store)
    _register(store)
    store.add_model_reference("resnet", 1, kind="image", ref="resnet-image:1")
    store.add_model_reference("resnet", 1, kind="deployment", ref="berlin-fleet")
    store.add_model_reference("resnet", 1, kind="deployment", ref="paris-fleet")
    references = store.list_model_references("resnet", 1)
    assert [(r.kind, r.name, r.active) for r in references] == [
        ("image", "resnet-image:1", True),
        ("deployment", "berlin-fleet", True),
        ("deployment", "paris-fleet", True),
    ]
    with pytest.raises(ModelInUseError, match="berlin-fleet, paris-fleet"):
        store.delete_model("resnet", 1)
    store.set_model_reference_active("deployment", "berlin-fleet", False)
    with pytest.raises(ModelInUseError, match="paris-fleet"):
        store.delete_model("resnet", 1)
    store.set_model_reference_active("deployment", "paris-fleet", False)
    assert [r.active for r in store.list_model_references("resnet", 1)] == [True, False, False]
    store.delete_model("resnet", 1)  # an active image reference does not block deletion
    with pytest.raises(NotFoundError, match="its versions are 2"):
        store.get_model("resnet", 1)
    assert store.get_model("resnet").version == 2
    assert _register(store).version == 3  # numbers are never reused
    with pytest.raises(NotFoundError):
        store.delete_model("resnet", 1)
