"""Version policies, versions added and removed while serving, the repository API, and upgrades under load.

Every version here is `y = x + version`, so each answer shows which version computed it.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.runtime.scoring.builders import add_model, corrupt_model, write_atomically
from tests.support import ServerProcess, wait_until, write_config

X = np.arange(8, dtype=np.float32).reshape(2, 4)
POLL_SECS = "0.2"


def version_dir(repo: Path, model: str, version: int) -> Path:
    return repo / model / str(version)


def add_version(repo: Path, model: str, version: int) -> None:
    """Write a version atomically, as the README asks of deployers."""
    (repo / model).mkdir(parents=True, exist_ok=True)
    write_atomically(version_dir(repo, model, version), lambda path: add_model(path, offset=float(version)))


def _build(repo: Path) -> None:
    for model in ("latest2", "all", "specific", "default"):
        for version in (1, 2, 3):
            add_model(version_dir(repo, model, version) / "model.onnx", offset=float(version))
    write_config(repo / "latest2", version_policy={"latest": {"num_versions": 2}})
    write_config(repo / "all", version_policy={"all": {}})
    write_config(repo / "specific", version_policy={"specific": {"versions": [1, 3]}})
    for model in ("hot", "rollback", "changed", "guarded", "unloadme", "canary", "upgrade"):
        add_model(version_dir(repo, model, 1) / "model.onnx", offset=1.0)
    write_config(repo / "upgrade", max_batch_size=4, dynamic_batching={"max_queue_delay_microseconds": 500})


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory(_build, "--repository-poll-secs", POLL_SECS)


@pytest.fixture(scope="module")
def grpc_client(server: ServerProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_url)


@pytest.fixture(scope="module")
def http_client(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.http_url)


def infer(client: grpcclient.InferenceServerClient, model: str, version: str = "") -> tuple[str, float]:
    """(version that answered, the offset it added)."""
    tensor = grpcclient.InferInput("x", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    result = client.infer(model, [tensor], model_version=version)
    offsets = result.as_numpy("y") - X
    assert np.all(offsets == offsets.flat[0])
    return result.get_response().model_version, float(offsets.flat[0])


def serving(client: grpcclient.InferenceServerClient, model: str) -> dict[str, str]:
    """version -> state, from the repository index."""
    return {e.version: e.state for e in client.get_model_repository_index().models if e.name == model}


# -- policies ----------------------------------------------------------------------------------------

POLICIES = {"latest2": ["2", "3"], "all": ["1", "2", "3"], "specific": ["1", "3"], "default": ["3"]}


@pytest.mark.parametrize("model", sorted(POLICIES))
def test_version_policy_selects_versions(
    model: str, grpc_client: grpcclient.InferenceServerClient, http_client: httpclient.InferenceServerClient
) -> None:
    wanted = POLICIES[model]
    assert list(grpc_client.get_model_metadata(model).versions) == wanted
    assert http_client.get_model_metadata(model)["versions"] == wanted
    assert serving(grpc_client, model) == dict.fromkeys(wanted, "READY")
    for version in ("1", "2", "3"):
        assert grpc_client.is_model_ready(model, version) == (version in wanted)
        assert http_client.is_model_ready(model, version) == (version in wanted)
        if version in wanted:
            assert infer(grpc_client, model, version) == (version, float(version))
        else:
            with pytest.raises(InferenceServerException) as info:
                infer(grpc_client, model, version)
            assert info.value.status() == "StatusCode.NOT_FOUND"
    # Without a version, the newest ready version answers.
    assert infer(grpc_client, model) == (wanted[-1], float(wanted[-1]))


def test_statistics_per_served_version(grpc_client: grpcclient.InferenceServerClient) -> None:
    stats = grpc_client.get_inference_statistics("specific").model_stats
    assert sorted(s.version for s in stats) == ["1", "3"]
    one = grpc_client.get_inference_statistics("specific", "3").model_stats
    assert [s.version for s in one] == ["3"]


# -- the repository changes while serving -----------------------------------------------------------


def test_new_version_is_picked_up_and_the_old_one_unloaded(
    server: ServerProcess, grpc_client: grpcclient.InferenceServerClient
) -> None:
    assert infer(grpc_client, "hot") == ("1", 1.0)
    add_version(server.repo, "hot", 2)
    wait_until(lambda: infer(grpc_client, "hot") == ("2", 2.0), what="version 2 of 'hot' to answer")
    wait_until(lambda: serving(grpc_client, "hot") == {"2": "READY"}, what="version 1 of 'hot' to unload")
    assert not grpc_client.is_model_ready("hot", "1")
    assert list(grpc_client.get_model_metadata("hot").versions) == ["2"]


def test_removing_the_newest_version_rolls_back(
    server: ServerProcess, grpc_client: grpcclient.InferenceServerClient
) -> None:
    add_version(server.repo, "rollback", 2)
    wait_until(lambda: serving(grpc_client, "rollback") == {"2": "READY"}, what="version 2 alone")
    shutil.rmtree(version_dir(server.repo, "rollback", 2))
    wait_until(lambda: serving(grpc_client, "rollback") == {"1": "READY"}, what="version 1 to come back")
    assert infer(grpc_client, "rollback") == ("1", 1.0)


def test_changed_model_file_is_reloaded(
    server: ServerProcess, grpc_client: grpcclient.InferenceServerClient
) -> None:
    assert infer(grpc_client, "changed") == ("1", 1.0)
    target = version_dir(server.repo, "changed", 1) / "model.onnx"
    staging = add_model(server.repo / "changed" / ".staging.onnx", offset=10.0)
    os.replace(staging, target)
    wait_until(lambda: infer(grpc_client, "changed") == ("1", 10.0), what="the changed file to serve")


def test_a_broken_new_version_leaves_the_old_one_serving(
    server: ServerProcess, grpc_client: grpcclient.InferenceServerClient
) -> None:
    write_atomically(version_dir(server.repo, "guarded", 2), corrupt_model)
    wait_until(
        lambda: serving(grpc_client, "guarded") == {"1": "READY", "2": "UNAVAILABLE"}, what="v2 to fail"
    )
    [failed] = [
        e for e in grpc_client.get_model_repository_index().models if e.name == "guarded" and e.version == "2"
    ]
    assert "cannot load" in failed.reason
    assert grpc_client.is_model_ready("guarded")
    assert not grpc_client.is_model_ready("guarded", "2")
    assert infer(grpc_client, "guarded") == ("1", 1.0)
    with pytest.raises(InferenceServerException) as info:
        infer(grpc_client, "guarded", "2")
    assert info.value.status() == "StatusCode.UNAVAILABLE"
    assert "cannot load" in info.value.message()

    # A good version 3 replaces both: version 1 is unloaded and the failure of version 2 is forgotten.
    add_version(server.repo, "guarded", 3)
    wait_until(lambda: serving(grpc_client, "guarded") == {"3": "READY"}, what="version 3 alone")
    assert infer(grpc_client, "guarded") == ("3", 3.0)


def test_new_and_removed_model_directories(
    server: ServerProcess, grpc_client: grpcclient.InferenceServerClient
) -> None:
    staging = server.repo / ".newcomer"
    add_model(staging / "1" / "model.onnx", offset=1.0)
    os.rename(staging, server.repo / "newcomer")
    http_client = httpclient.InferenceServerClient(server.http_url)  # False, not NOT_FOUND, before it exists
    wait_until(lambda: http_client.is_model_ready("newcomer"), what="model 'newcomer' to load")
    assert infer(grpc_client, "newcomer") == ("1", 1.0)

    shutil.rmtree(server.repo / "newcomer")

    def gone() -> bool:
        return not any(e.name == "newcomer" for e in grpc_client.get_model_repository_index().models)

    wait_until(gone, what="model 'newcomer' to leave the index")
    with pytest.raises(InferenceServerException) as info:
        infer(grpc_client, "newcomer")
    assert info.value.status() == "StatusCode.NOT_FOUND"


def test_a_removed_model_that_failed_to_load_leaves_the_index(
    server: ServerProcess, grpc_client: grpcclient.InferenceServerClient
) -> None:
    staging = server.repo / ".doomed"
    corrupt_model(staging / "1" / "model.onnx")
    os.rename(staging, server.repo / "doomed")
    wait_until(lambda: serving(grpc_client, "doomed") == {"1": "UNAVAILABLE"}, what="model 'doomed' to fail")
    shutil.rmtree(server.repo / "doomed")
    wait_until(lambda: serving(grpc_client, "doomed") == {}, what="model 'doomed' to leave the index")
    with pytest.raises(InferenceServerException) as info:
        infer(grpc_client, "doomed")
    assert info.value.status() == "StatusCode.NOT_FOUND"


# -- repository API ----------------------------------------------------------------------------------


def test_repository_index_over_grpc_and_rest(
    server: ServerProcess,
    grpc_client: grpcclient.InferenceServerClient,
    http_client: httpclient.InferenceServerClient,
) -> None:
    grpc_index = {(e.name, e.version, e.state) for e in grpc_client.get_model_repository_index().models}
    rest_index = {(e["name"], e["version"], e["state"]) for e in http_client.get_model_repository_index()}
    for entry in [("all", "1", "READY"), ("all", "3", "READY"), ("specific", "3", "READY")]:
        assert entry in grpc_index
        assert entry in rest_index
    assert not any(name == "specific" and version == "2" for name, version, _ in grpc_index)
    with server.http() as client:
        everything = client.post("/v2/repository/index").json()
        ready = client.post("/v2/repository/index", json={"ready": True}).json()
    assert {e["state"] for e in ready} == {"READY"}
    assert len(ready) <= len(everything)


def test_unload_and_load(
    server: ServerProcess,
    grpc_client: grpcclient.InferenceServerClient,
    http_client: httpclient.InferenceServerClient,
) -> None:
    assert infer(grpc_client, "unloadme") == ("1", 1.0)
    grpc_client.unload_model("unloadme")
    entries = [e for e in grpc_client.get_model_repository_index().models if e.name == "unloadme"]
    assert [(e.state, e.reason) for e in entries] == [("UNAVAILABLE", "unloaded")]
    assert not http_client.is_model_ready("unloadme")
    with pytest.raises(InferenceServerException):
        infer(grpc_client, "unloadme")

    # An unloaded model stays unloaded across rescans: wait for a rescan to pick up another change.
    add_version(server.repo, "canary", 2)
    wait_until(lambda: infer(grpc_client, "canary") == ("2", 2.0), what="a rescan")
    assert not http_client.is_model_ready("unloadme")

    http_client.load_model("unloadme")
    assert http_client.is_model_ready("unloadme")
    assert infer(grpc_client, "unloadme") == ("1", 1.0)

    # The same round trip the other way round: unload over REST, load over gRPC.
    http_client.unload_model("unloadme")
    assert serving(grpc_client, "unloadme") == {"": "UNAVAILABLE"}
    grpc_client.load_model("unloadme")
    assert grpc_client.is_model_ready("unloadme", "1")


def test_load_and_unload_of_unknown_models(
    server: ServerProcess, grpc_client: grpcclient.InferenceServerClient
) -> None:
    for call in (grpc_client.load_model, grpc_client.unload_model):
        with pytest.raises(InferenceServerException) as info:
            call("no-such-model")
        assert info.value.status() == "StatusCode.NOT_FOUND"
    with server.http() as client:
        assert client.post("/v2/repository/models/no-such-model/load").status_code == 404
        assert client.post("/v2/repository/models/no-such-model/unload").status_code == 404


# -- upgrade under load ------------------------------------------------------------------------------


@dataclass
class Tally:
    answers: dict[str, int] = field(default_factory=dict)  # version -> count
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, version: str, offset: float) -> None:
        with self.lock:
            if offset != float(version):
                self.failures.append(f"version {version} added {offset}")
            self.answers[version] = self.answers.get(version, 0) + 1

    def fail(self, error: BaseException) -> None:
        with self.lock:
            self.failures.append(repr(error))

    def count(self, version: str | None = None) -> int:
        with self.lock:
            return sum(n for v, n in self.answers.items() if version is None or v == version)


def test_upgrade_under_load_fails_no_request(server: ServerProcess) -> None:
    tally = Tally()
    stop = threading.Event()
    max_requests = 20_000  # per client: a bound in case the stop signal never comes

    def grpc_worker() -> None:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            for _ in range(max_requests):
                if stop.is_set():
                    return
                try:
                    tally.record(*infer(client, "upgrade"))
                except Exception as exc:
                    tally.fail(exc)
        finally:
            client.close()

    def rest_worker() -> None:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": X.ravel().tolist()}]}
        with httpx.Client(base_url=server.base_url, timeout=30.0, trust_env=False) as client:
            for _ in range(max_requests):
                if stop.is_set():
                    return
                try:
                    reply = client.post("/v2/models/upgrade/infer", json=body)
                    reply.raise_for_status()
                    doc = reply.json()
                    y = np.array(doc["outputs"][0]["data"], dtype=np.float32).reshape(2, 4)
                    tally.record(doc["model_version"], float((y - X).flat[0]))
                except Exception as exc:
                    tally.fail(exc)

    workers = [threading.Thread(target=w, daemon=True) for w in (grpc_worker, grpc_worker, rest_worker)]
    for worker in workers:
        worker.start()
    try:
        wait_until(lambda: tally.count("1") >= 30, what="traffic on version 1")
        add_version(server.repo, "upgrade", 2)
        wait_until(lambda: tally.count("2") >= 1, timeout=60, what="version 2 to answer")
        # Keep the load on until version 1 is gone and version 2 has carried traffic on its own.
        client = grpcclient.InferenceServerClient(server.grpc_url)
        wait_until(
            lambda: serving(client, "upgrade") == {"2": "READY"}, timeout=60, what="version 1 to unload"
        )
        settled = tally.count("2")
        wait_until(lambda: tally.count("2") >= settled + 30, what="more traffic on version 2")
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
    assert not any(worker.is_alive() for worker in workers)
    assert tally.failures == []
    assert tally.count("1") >= 30 and tally.count("2") >= 30
    assert set(tally.answers) == {"1", "2"}
