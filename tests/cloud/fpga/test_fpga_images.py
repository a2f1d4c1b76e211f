"""FPGA images end to end, through a real `edgewise up --broker mosquitto`, real YoWASP tools and a real agent:
`image build --kind fpga` compiles, verifies and builds the bitstream; a second model of the same architecture is
a block RAM patch; the image deploys as a module of `type: fpga` and scores over gRPC from the virtual FPGA,
exactly as the integer reference says."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from edgewise.cloud.broker import find_mosquitto
from edgewise.fpga.accuracy import head_outputs
from edgewise.fpga.ir import IntegerModel
from edgewise.runtime.oci.unpack import open_image, unpack_image
from onnx import TensorProto, helper, numpy_helper

from tests.cloud.cli.cli import edgewise, edgewise_json
from tests.cloud.service import WorkspaceProcess, start_workspace
from tests.fpga.models import digits_mlp_onnx
from tests.runtime.agent.e2e.harness import AgentProcess, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkspaceProcess]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto)")
    workspace = start_workspace(tmp_path_factory.mktemp("fpga") / "data", "--broker", "mosquitto")
    yield workspace
    workspace.stop()


def _register(service: WorkspaceProcess, folder: Path, name: str, seed: int) -> Path:
    """Register a digits MLP; answers its calibration file (labelled, so the build reports accuracy)."""
    onnx_bytes, split = digits_mlp_onnx(seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(onnx_bytes)
    calibration = folder / "calibration.npz"
    np.savez(calibration, x=split.test.x, y=split.test.y)
    edgewise("model", "register", "--name", name, "--file", str(folder / "model.onnx"), env=service.env)
    return calibration


@pytest.fixture(scope="module")
def images(service: WorkspaceProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Two FPGA images of two digits MLPs with the same architecture and different weights."""
    suffix = uuid.uuid4().hex[:8]
    built: dict[str, dict[str, Any]] = {}
    for seed, key in ((0, "first"), (1, "second")):
        folder = tmp_path_factory.mktemp(f"model-{key}")
        calibration = _register(service, folder, f"digits-{key}-{suffix}", seed)
        edgewise(
            "image", "build", "--kind", "fpga", "--model", f"digits-{key}-{suffix}", "--name", f"fpga-{key}-{suffix}",
            "--parallelism", "8", "--calibration", str(calibration), env=service.env,
        )  # fmt: skip
        built[key] = edgewise_json("image", "show", f"fpga-{key}-{suffix}", env=service.env)
    return built


def test_an_fpga_image_records_resources_fmax_cycles_and_accuracy(images: dict[str, dict[str, Any]]) -> None:
    first = images["first"]
    assert first["kind"] == "fpga"
    details = first["details"]
    used, available = details["resources"]["ICESTORM_LC"]
    assert 0 < used <= available == 5280
    assert details["resources"]["ICESTORM_DSP"][0] >= 1  # the multiply-accumulate units are SB_MAC16 blocks
    assert details["fmax_mhz"] > 0 and details["target_mhz"] == 48.0
    assert details["cycles"] > 0
    assert details["accuracy"]["points_lost"] <= 1.0
    assert details["options"]["parallelism"] == 8


def test_a_second_model_of_the_same_architecture_is_a_patch(images: dict[str, dict[str, Any]]) -> None:
    first, second = images["first"]["details"], images["second"]["details"]
    assert first["architecture"] == second["architecture"]
    assert second["build"] == "patched template"
    assert "template" not in second["timings_s"] or second["timings_s"]["template"] < first["timings_s"]["template"]
    assert images["first"]["manifest_digest"] != images["second"]["manifest_digest"]


def _export(service: WorkspaceProcess, image: dict[str, Any], folder: Path) -> tuple[dict[str, Any], Path]:
    """The image's manifest and its model version folder, from `image export --format oci` unpacked here."""
    layout = folder / "layout"
    ref = f"{image['name']}:{image['version']}"
    edgewise("image", "export", ref, "--format", "oci", "--output-path", str(layout), env=service.env)
    with open_image(layout) as opened:
        unpack_image(opened, folder / "rootfs")
        manifest = dict(opened.manifest)
    (model,) = image["models"]
    name, version = model.split(":")
    return manifest, folder / "rootfs" / "var/lib/edgewise/models" / name / version


def test_the_image_is_an_oci_artifact_with_every_part(
    service: WorkspaceProcess, images: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    manifest, folder = _export(service, images["first"], tmp_path)
    assert manifest["artifactType"] == "application/vnd.edgewise.fpga.v1+json"
    assert manifest["annotations"]["io.edgewise.fpga.device"] == "up5k"
    for part in ("fpga.json", "bitstream.bin", "rtl/top.v", "design/design.cc", "integer_model.npz", "report.json"):
        assert (folder / part).is_file(), part
    assert (folder / "bitstream.bin").read_bytes()[:4] == b"\xff\x00\x00\xff"  # the iCE40 bitstream preamble


def test_an_fpga_module_scores_over_grpc_like_the_integer_reference(
    service: WorkspaceProcess, images: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    image = images["first"]
    device_id = f"fpga-{uuid.uuid4().hex[:6]}"
    with service.client() as client:
        added = client.add_device(device_id, tags={"board": "virtual"})
    agent = AgentProcess(
        connection=added.connection_string,
        state_dir=tmp_path / "agent",
        log_path=tmp_path / "agent.log",
        flags=("--health-interval", "0.5"),
    ).start()
    try:
        edgewise("deploy", "create", f"d-{device_id}", "--image", image["name"], "--device", device_id, "--module",
                 "digits", "--wait", "--timeout", "300", env=service.env)  # fmt: skip

        def running() -> dict[str, Any] | None:
            with service.client() as client:
                modules = (client.get_device(device_id).reported or {}).get("modules") or {}
            entry = modules.get("digits") or {}
            return entry if entry.get("runtimeStatus") == "running" else None

        entry = wait_for(running, timeout=120, what="the FPGA module running", interval=0.5)
        _manifest, folder = _export(service, image, tmp_path)
        reference = IntegerModel.load(folder)
        name = folder.parent.name

        x = np.random.default_rng(3).uniform(0, 1, size=(6, 64)).astype(np.float32)
        client = grpcclient.InferenceServerClient(entry["endpoints"]["grpc"])
        tensor = grpcclient.InferInput(reference.input_name, list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer(name, [tensor])
        values = reference.dequantize_output(reference.forward(reference.quantize_input(x)))
        expected = head_outputs(reference.head, values)
        for output in reference.head:
            got = result.as_numpy(output.name)
            if output.op == "argmax":
                assert got.tolist() == expected[output.name].tolist()
            else:
                np.testing.assert_allclose(got, expected[output.name], rtol=1e-5, atol=1e-6)
        cycles = result.get_response().parameters["fpga_cycles"].int64_param
        assert cycles == 6 * images["first"]["details"]["cycles"]
    finally:
        agent.cleanup()


def test_unsupported_operators_missing_calibration_and_stray_options_are_refused(
    service: WorkspaceProcess, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    model = tmp_path / "tanh.onnx"
    weights = numpy_helper.from_array(np.ones((3, 4), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["h"], transB=1), helper.make_node("Tanh", ["h"], ["y"])],
        "tanh",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        initializer=[weights],
    )
    model.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    edgewise("model", "register", "--name", f"tanh-{suffix}", "--file", str(model), env=service.env)
    calibration = tmp_path / "calibration.npy"
    np.save(calibration, np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32))

    failed = edgewise("image", "build", "--kind", "fpga", "--model", f"tanh-{suffix}", "--name", f"t-{suffix}",
                      "--calibration", str(calibration), env=service.env, expect=1)  # fmt: skip
    assert "Tanh" in failed.stdout + failed.stderr

    missing = edgewise("image", "build", "--kind", "fpga", "--model", f"tanh-{suffix}", "--name", f"t-{suffix}",
                       env=service.env, expect=1)  # fmt: skip
    assert "--calibration" in missing.stdout + missing.stderr

    stray = edgewise("image", "build", "--model", f"tanh-{suffix}", "--name", f"t-{suffix}", "--parallelism", "4",
                     env=service.env, expect=2)  # fmt: skip
    assert "--kind fpga" in stray.stdout + stray.stderr
