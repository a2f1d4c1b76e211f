"""Health over the admin sockets: probe, wait_healthy with warm-up, and its failures."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from edgewise.runtime.agent.drivers import PlainSandbox
from edgewise.runtime.agent.errors import HealthCheckError
from edgewise.runtime.agent.health import _zero_tensor, probe, wait_healthy
from edgewise.runtime.agent.supervisor import Supervisor

from tests.runtime.agent.modules.conftest import LaunchFactory, Tracker
from tests.support import write_config


def test_zero_tensor_fills_unknown_dimensions_with_one() -> None:
    assert _zero_tensor({"name": "x", "datatype": "FP32", "shape": [-1, 3]}) == {
        "name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0, 0, 0],
    }  # fmt: skip
    assert _zero_tensor({"name": "s", "datatype": "BYTES", "shape": [2]})["data"] == ["", ""]
    assert _zero_tensor({"name": "b", "datatype": "BOOL", "shape": [1]})["data"] == [False]


def test_probe_of_a_missing_module_is_not_live(short_dir: Path) -> None:
    result = asyncio.run(probe(short_dir, timeout=1.0))
    assert not result.live and not result.ready and "http.sock" in result.detail


def test_wait_healthy_passes_with_warmup(make_launch: LaunchFactory, tracker: Tracker) -> None:
    supervisor = Supervisor(sandbox=PlainSandbox(), stop_grace=5.0)
    launch = make_launch()
    proc = tracker.add(supervisor, supervisor.start(launch))
    asyncio.run(wait_healthy(launch.admin_dir, timeout=30.0, warmup=True, alive=lambda: supervisor.alive(proc)))
    result = asyncio.run(probe(launch.admin_dir))
    assert result.live and result.ready, result.detail


def test_corrupt_model_fails_naming_the_model(make_launch: LaunchFactory, tracker: Tracker) -> None:
    supervisor = Supervisor(sandbox=PlainSandbox(), stop_grace=5.0)
    launch = make_launch(corrupt=True)
    proc = tracker.add(supervisor, supervisor.start(launch))
    with pytest.raises(HealthCheckError, match="model 'iris'") as failure:
        asyncio.run(wait_healthy(launch.admin_dir, timeout=30.0, warmup=True, alive=lambda: supervisor.alive(proc)))
    assert "did not load" in str(failure.value)


def _unrunnable_model(model_file: Path) -> None:
    """Reshape to a fixed element count that a [1, 4] input cannot meet: loads fine, fails when run."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "bad_reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[helper.make_tensor("shape", TensorProto.INT64, [2], [5, 7])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(model_file))


def test_model_that_loads_but_cannot_run_fails_the_warmup(
    make_launch: LaunchFactory, tracker: Tracker, tmp_path: Path
) -> None:
    """A model that loads (the server's own warm-up is off for it) but fails when run is caught before traffic."""
    launch = make_launch()
    model_file = launch.rootfs / "var/lib/edgewise/models/iris/1/model.onnx"
    _unrunnable_model(model_file)
    write_config(model_file.parent.parent, warmup=False)
    supervisor = Supervisor(sandbox=PlainSandbox(), stop_grace=5.0)
    proc = tracker.add(supervisor, supervisor.start(launch))
    alive = lambda: supervisor.alive(proc)  # noqa: E731
    asyncio.run(wait_healthy(launch.admin_dir, timeout=30.0, warmup=False, alive=alive))  # loads and is ready
    with pytest.raises(HealthCheckError, match="warm-up inference of model 'iris' failed"):
        asyncio.run(wait_healthy(launch.admin_dir, timeout=30.0, warmup=True, alive=alive))


def test_a_model_the_server_warms_up_itself_fails_its_load(make_launch: LaunchFactory, tracker: Tracker) -> None:
    """With the server's warm-up on (the default), the same model never becomes ready: the agent's readiness
    check names the failed inference, and the agent sends no warm-up of its own."""
    launch = make_launch()
    model_file = launch.rootfs / "var/lib/edgewise/models/iris/1/model.onnx"
    _unrunnable_model(model_file)
    supervisor = Supervisor(sandbox=PlainSandbox(), stop_grace=5.0)
    proc = tracker.add(supervisor, supervisor.start(launch))
    with pytest.raises(HealthCheckError, match="model 'iris' did not load") as failure:
        asyncio.run(wait_healthy(launch.admin_dir, timeout=30.0, warmup=True, alive=lambda: supervisor.alive(proc)))
    assert "Reshape" in str(failure.value) or "reshape" in str(failure.value).lower()


def test_exited_module_fails_fast(make_launch: LaunchFactory, tracker: Tracker) -> None:
    supervisor = Supervisor(sandbox=PlainSandbox(), stop_grace=5.0)
    launch = make_launch()
    shutil.rmtree(launch.rootfs / "var/lib/edgewise/models")  # edgewise-score exits at once
    proc = tracker.add(supervisor, supervisor.start(launch))
    with pytest.raises(HealthCheckError, match="exited before it became healthy"):
        asyncio.run(wait_healthy(launch.admin_dir, timeout=60.0, warmup=True, alive=lambda: supervisor.alive(proc)))


def test_not_ready_in_time(short_dir: Path) -> None:
    with pytest.raises(HealthCheckError, match=r"not healthy within 0\.5s"):
        asyncio.run(wait_healthy(short_dir, timeout=0.5, warmup=False, alive=lambda: True))
