"""Web services through a real `edgewise up --broker mosquitto`: the service's own agent serves the image on
this host, both scoring URLs answer, the image stays while in use, and delete closes the port."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from edgewise.cloud.broker import find_mosquitto
from edgewise.cloud.webservices import WebService
from onnx import numpy_helper

from examples.models import matmul_model
from tests.cloud.cli.cli import edgewise, edgewise_json
from tests.cloud.service import WorkspaceProcess, start_workspace
from tests.runtime.agent.e2e import procs
from tests.runtime.agent.e2e.harness import wait_for


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkspaceProcess]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto)")
    with runtime_dir() as run:
        workspace = start_workspace(tmp_path_factory.mktemp("webservices") / "data", "--broker", "mosquitto", env=run)
        yield workspace
        workspace.stop()
        # The host agent stops with the service; its modules outlive it by design, so the test ends them.
        state_dir = workspace.data_dir / "webservices" / "agent"
        procs.kill_trees(procs.process_roots(str(state_dir), run["XDG_RUNTIME_DIR"], agent_pid=None))


@contextlib.contextmanager
def runtime_dir() -> Iterator[dict[str, str]]:
    """A runtime folder for the host agent (its modules' sockets), given as the service's environment: a forked
    module's command line names it rather than the agent's state directory."""
    path = tempfile.mkdtemp(prefix="ew-run-")
    try:
        yield {"XDG_RUNTIME_DIR": path}
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return matmul_model(tmp_path_factory.mktemp("model") / "model.onnx")


def weight(model_file: Path) -> np.ndarray:
    (initializer,) = onnx.load(str(model_file)).graph.initializer
    array: np.ndarray = numpy_helper.to_array(initializer)
    return array


def refused(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, port)) != 0


def test_create_score_list_show_delete(service: WorkspaceProcess, model_file: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    model, image, name = f"m-{suffix}", f"img-{suffix}", f"ws-{suffix}"
    edgewise("model", "register", "--name", model, "--file", str(model_file), env=service.env)
    edgewise("image", "build", "--model", model, "--name", image, env=service.env)

    created: dict[str, Any] = edgewise_json("webservice", "create", name, "--image", f"{image}:1", env=service.env)
    assert created["state"] == "succeeded", created
    assert created["runtime_status"] == "running"
    assert created["models"] == [f"{model}:1"]
    assert created["infer_url"] == f"{created['rest_url']}/v2/models/{model}/infer"

    x = np.arange(32, dtype=np.float32).reshape(2, 16) / 10
    expected = x @ weight(model_file)
    body = {"inputs": [{"name": "x", "shape": [2, 16], "datatype": "FP32", "data": x.ravel().tolist()}]}
    with httpx.Client(trust_env=False, timeout=30) as http:
        answer = http.post(created["infer_url"], json=body)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["shape"] == [2, 16]
    np.testing.assert_allclose(np.array(output["data"], dtype=np.float32).reshape(2, 16), expected, rtol=1e-5)

    import tritonclient.grpc as grpcclient

    triton = grpcclient.InferenceServerClient(url=created["grpc_url"])
    try:
        assert triton.is_model_ready(model)
        tensor = grpcclient.InferInput("x", [2, 16], "FP32")
        tensor.set_data_from_numpy(x)
        result = triton.infer(model, [tensor])
        np.testing.assert_allclose(result.as_numpy("y"), expected, rtol=1e-5)
    finally:
        triton.close()

    listed = edgewise_json("webservice", "list", env=service.env)
    assert [(s["name"], s["rest_url"], s["grpc_url"]) for s in listed if s["name"] == name] == [
        (name, created["rest_url"], created["grpc_url"])
    ]
    shown = edgewise_json("webservice", "show", name, env=service.env)
    assert shown["state"] == "succeeded" and shown["http_port"] == created["http_port"]
    table = edgewise("webservice", "show", name, env=service.env).stdout
    assert created["infer_url"] in table and created["grpc_url"] in table

    host = edgewise_json("device", "show", "edgewise-host", env=service.env)
    assert host["tags"] == {"role": "webservice-host"}
    # the workspace's own host is not one of the user's devices: listings leave it out unless --all
    for command in (["device", "list"], ["device", "health"]):
        assert "edgewise-host" not in [d["id"] for d in edgewise_json(*command, env=service.env)]
        assert "edgewise-host" in [d["id"] for d in edgewise_json(*command, "--all", env=service.env)]
    listed = edgewise("device", "list", env=service.env)
    assert "edgewise-host" in listed.stderr and "--all" in listed.stderr
    # nor can a user add it again or remove it: it would take the web services' agent with it
    for command in (["device", "add", "edgewise-host"], ["device", "remove", "edgewise-host", "-y"]):
        answer = edgewise(*command, env=service.env, expect=1)
        assert "workspace host that runs web services" in answer.stderr, answer
    assert edgewise_json("device", "show", "edgewise-host", env=service.env)["status"] == "online"
    connection = service.data_dir / "webservices" / "connection"
    assert connection.stat().st_mode & 0o777 == 0o600

    in_use = edgewise("image", "delete", f"{image}:1", "--yes", env=service.env, expect=1)
    assert f"webservice-{name}" in in_use.stdout + in_use.stderr

    edgewise("webservice", "delete", name, env=service.env)
    wait_for(
        lambda: refused("127.0.0.1", created["http_port"]) and refused("127.0.0.1", created["grpc_port"]),
        timeout=30,
        what="the web service's ports to close",
        interval=0.2,
    )
    deployments = edgewise_json("deploy", "list", env=service.env)
    assert f"webservice-{name}" not in {d["name"] for d in deployments}
    gone = edgewise("webservice", "show", name, env=service.env, expect=1)
    assert "not found" in gone.stdout + gone.stderr
    edgewise("image", "delete", f"{image}:1", "--yes", env=service.env)


def test_refusals(service: WorkspaceProcess) -> None:
    bad = edgewise("webservice", "create", "Bad_Name", "--image", "nothing", env=service.env, expect=1)
    assert "invalid web service name" in bad.stdout + bad.stderr
    missing = edgewise("webservice", "create", "ws-none", "--image", "no-such-image", env=service.env, expect=1)
    assert "no-such-image" in missing.stdout + missing.stderr
    listed = json.loads(edgewise("webservice", "list", "--output", "json", env=service.env).stdout)
    assert "ws-none" not in {s["name"] for s in listed}


def test_a_restarted_service_brings_its_agent_back_and_replaces_lost_credentials(
    model_file: Path, tmp_path: Path
) -> None:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto)")
    suffix = uuid.uuid4().hex[:8]
    model, image, name = f"m-{suffix}", f"img-{suffix}", f"ws-{suffix}"
    with runtime_dir() as run:  # the same one for both services: the second one's agent adopts the module
        restart_service_keeping_module(tmp_path, model_file, run, model=model, image=image, name=name)


def restart_service_keeping_module(
    tmp_path: Path, model_file: Path, run: dict[str, str], *, model: str, image: str, name: str
) -> None:
    own = start_workspace(tmp_path / "data", "--broker", "mosquitto", env=run)
    state_dir = own.data_dir / "webservices" / "agent"
    try:
        edgewise("model", "register", "--name", model, "--file", str(model_file), env=own.env)
        edgewise("image", "build", "--model", model, "--name", image, env=own.env)
        started = edgewise_json("webservice", "create", name, "--image", image, "--no-wait", env=own.env)
        assert started["state"] in ("targeted", "applied", "succeeded")
        with own.client() as client:
            serving = client.wait_webservice(name, timeout=60)
        assert serving.state == "succeeded", serving
        port = serving.http_port

        own.stop()
        assert not refused("127.0.0.1", port)  # the module outlives the service and its agent
        (own.data_dir / "webservices" / "connection").unlink()

        own = start_workspace(own.data_dir, "--broker", "mosquitto", env=run)
        with own.client() as client:
            host = client.get_device("edgewise-host")
            assert host.tags == {"role": "webservice-host"}

            def running() -> WebService | None:
                found = client.get_webservice(name)
                return found if found.state == "succeeded" and found.runtime_status == "running" else None

            again = wait_for(
                running,
                timeout=60,
                what="the web service to be reported running again",
                interval=0.3,
            )
            assert again.http_port == port
            with httpx.Client(trust_env=False, timeout=30) as http:
                assert http.get(f"{again.rest_url}/v2/models/{model}/ready").status_code == 200
            client.delete_webservice(name)
        wait_for(lambda: refused("127.0.0.1", port), timeout=30, what="the port to close", interval=0.2)
    finally:
        own.stop()
        procs.kill_trees(procs.process_roots(str(state_dir), run["XDG_RUNTIME_DIR"], agent_pid=None))
