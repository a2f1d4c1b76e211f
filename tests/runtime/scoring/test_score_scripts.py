"""Scoring scripts (`score.py` with init() and run()) served by a real edgewise-score over gRPC and REST.

Each script below is written into the repository as a deployer would; the tests check what clients see:
metadata from the declarations, answers, failed requests that leave the server serving, versions that fail to
load with the reason, and new versions picked up while serving.
"""

from __future__ import annotations

import os
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from edgewise.runtime.scoring.backends import load_backend
from edgewise.runtime.scoring.backends.script import OnnxModel, ScriptBackend
from edgewise.runtime.scoring.errors import InferenceFailedError, InvalidInputError, ModelLoadError
from edgewise.runtime.scoring.repository import read_config, versions_on_disk
from edgewise.runtime.scoring.types import TensorSpec
from tritonclient.utils import InferenceServerException

from examples.models import matmul_model
from tests.support import ServerProcess, wait_until, write_config

POLL_SECS = "0.2"

# Pre- and post-processing around an ONNX model that the script loads itself: bytes 0..255 are scaled to
# [0, 1], multiplied by the model's weights, and turned into probabilities and a label.
PREPOST = """
    import numpy as np
    from edgewise.runtime.scoring.backends.script import OnnxModel

    INPUTS = [{"name": "pixels", "datatype": "UINT8", "shape": [-1, 4]}]
    OUTPUTS = [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
    ]

    model = None

    def init(model_dir):
        global model
        model = OnnxModel(model_dir / "model.onnx")

    def run(inputs):
        x = inputs["pixels"].astype(np.float32) / 255.0
        logits = model({"x": x})["y"]
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        return {"probabilities": probabilities, "label": probabilities.argmax(axis=1).astype(np.int64)}
"""

# A model with no ONNX at all, declared with TensorSpec objects: word counts of text.
WORDS = """
    import numpy as np
    from edgewise.runtime.scoring.types import TensorSpec

    INPUTS = [TensorSpec("text", "BYTES", (-1,))]
    OUTPUTS = [TensorSpec("words", "INT32", (-1,)), TensorSpec("shout", "BYTES", (-1,))]

    def init():
        pass

    def run(inputs):
        texts = [t.decode() for t in inputs["text"]]
        return {
            "words": [len(t.split()) for t in texts],
            "shout": np.array([t.upper() for t in texts]),
        }
"""

# Its answer depends on markers in the input, so that one model shows every kind of failed request.
CHECKED = """
    import numpy as np

    INPUTS = [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    OUTPUTS = [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]

    def init():
        pass

    def run(inputs):
        x = inputs["x"]
        if (x == -1).any():
            raise ValueError("x must not hold -1")
        if (x == -2).any():
            raise RuntimeError("the counter broke")
        if (x == -3).any():
            return {"y": x.astype(np.float64)}
        if (x == -4).any():
            return {"z": x}
        if (x == -5).any():
            return {"y": x[:, :2]}
        if (x == -6).any():
            return {"y": x[:1]}
        return {"y": x * 2}
"""

# Identical in two models: each must get its own module (globals, call counter) and its own folder.
TWIN = """
    import numpy as np

    INPUTS = [{"name": "x", "datatype": "INT64", "shape": [1]}]
    OUTPUTS = [
        {"name": "who", "datatype": "BYTES", "shape": [1]},
        {"name": "calls", "datatype": "INT64", "shape": [1]},
        {"name": "module", "datatype": "BYTES", "shape": [1]},
    ]
    calls = 0
    who = ""

    def init(model_dir):
        global who
        who = model_dir.parent.name + "/" + (model_dir / "tag.txt").read_text().strip()

    def run(inputs):
        global calls
        calls += 1
        return {"who": [who.encode()], "calls": [calls], "module": [__name__.encode()]}
"""

BROKEN_INIT = """
    INPUTS = [{"name": "x", "datatype": "FP32", "shape": [1]}]
    OUTPUTS = [{"name": "y", "datatype": "FP32", "shape": [1]}]

    def init():
        raise RuntimeError("the licence file is missing")

    def run(inputs):
        return {"y": inputs["x"]}
"""

SYNTAX_ERROR = """
    INPUTS = [{"name": "x", "datatype": "FP32", "shape": [1]}]

    def init(:
        pass
"""

NO_RUN = """
    INPUTS = [{"name": "x", "datatype": "FP32", "shape": [1]}]
    OUTPUTS = [{"name": "y", "datatype": "FP32", "shape": [1]}]

    def init():
        pass
"""

BAD_DECLARATION = """
    INPUTS = [{"name": "x", "datatype": "FLOAT", "shape": [1]}]
    OUTPUTS = [{"name": "y", "datatype": "FP32", "shape": [1]}]

    def init():
        pass

    def run(inputs):
        return {"y": inputs["x"]}
"""

FIXED_BATCH = """
    INPUTS = [{"name": "x", "datatype": "FP32", "shape": [2, 3]}]
    OUTPUTS = [{"name": "y", "datatype": "FP32", "shape": [2, 3]}]

    def init():
        pass

    def run(inputs):
        return {"y": inputs["x"]}
"""


def script(text: str, *, answer: float = 0.0) -> str:
    return textwrap.dedent(text).replace("ANSWER", repr(answer))


# `y = x + ANSWER`, and it reads `offset.txt` next to it at init: a change to either reloads the version.
OFFSET = """
    import numpy as np

    INPUTS = [{"name": "x", "datatype": "FP32", "shape": [-1]}]
    OUTPUTS = [{"name": "y", "datatype": "FP32", "shape": [-1]}, {"name": "module", "datatype": "BYTES", "shape": [1]}]
    extra = 0.0

    def init(model_dir):
        global extra
        extra = float((model_dir / "offset.txt").read_text())

    def run(inputs):
        y = (inputs["x"] + ANSWER + extra).astype(np.float32)
        return {"y": y, "module": [__name__]}
"""


def write_script(version_dir: Path, text: str, **kwargs: Any) -> Path:
    version_dir.mkdir(parents=True, exist_ok=True)
    path = version_dir / "score.py"
    path.write_text(script(text, **kwargs))
    return path


def write_offset_version(target: Path, answer: float, extra: str = "0") -> None:
    """A version folder written under a temporary name and renamed, as the README asks."""
    staging = target.parent / f".staging-{target.name}"
    write_script(staging, OFFSET, answer=answer)
    (staging / "offset.txt").write_text(extra)
    os.rename(staging, target)


def _build(repo: Path) -> None:
    write_script(repo / "prepost" / "1", PREPOST)
    matmul_model(repo / "prepost" / "1" / "model.onnx", features=4, outputs=3)
    write_config(repo / "prepost", backend="script")  # with model.onnx beside it, the script must be asked for
    write_script(repo / "words" / "1", WORDS)
    write_script(repo / "checked" / "1", CHECKED)
    write_config(repo / "checked", backend="script", max_batch_size=8)
    for twin, tag in (("twin_a", "alpha"), ("twin_b", "beta")):
        write_script(repo / twin / "1", TWIN)
        (repo / twin / "1" / "tag.txt").write_text(tag)
    write_script(repo / "broken_init" / "1", BROKEN_INIT)
    write_script(repo / "syntax" / "1", SYNTAX_ERROR)
    write_script(repo / "no_run" / "1", NO_RUN)
    write_script(repo / "bad_declaration" / "1", BAD_DECLARATION)
    write_script(repo / "fixed_batch" / "1", FIXED_BATCH)
    write_config(repo / "fixed_batch", max_batch_size=4)
    write_offset_version(repo / "hot" / "1", 1.0)
    write_offset_version(repo / "edited" / "1", 1.0)


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory(_build, "--repository-poll-secs", POLL_SECS)


@pytest.fixture(scope="module")
def grpc_client(server: ServerProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_url)


@pytest.fixture(scope="module")
def http_client(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.http_url)


def grpc_infer(client: grpcclient.InferenceServerClient, model: str, **arrays: np.ndarray) -> grpcclient.InferResult:
    tensors = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else {"f": "FP32", "i": "INT64", "u": "UINT8"}[array.dtype.kind]
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return client.infer(model, tensors)


def rest_infer(server: ServerProcess, model: str, x: list[list[float]]) -> tuple[int, dict[str, Any]]:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(x), len(x[0])], "data": x}]}
    with server.http() as client:
        response = client.post(f"/v2/models/{model}/infer", json=body)
    return response.status_code, response.json()


def index_reason(client: grpcclient.InferenceServerClient, model: str) -> tuple[str, str]:
    [entry] = [e for e in client.get_model_repository_index().models if e.name == model]
    return entry.state, entry.reason


# -- serving ------------------------------------------------------------------------------------------


def expected_prepost(repo: Path, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(repo / "prepost" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["y"], {"x": pixels.astype(np.float32) / 255.0})[0]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = exp / exp.sum(axis=1, keepdims=True)
    return probabilities, probabilities.argmax(axis=1)


def test_metadata_shows_the_declared_tensors(
    grpc_client: grpcclient.InferenceServerClient, http_client: httpclient.InferenceServerClient
) -> None:
    meta = grpc_client.get_model_metadata("prepost")
    assert meta.platform == "python"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("pixels", "UINT8", [-1, 4])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("probabilities", "FP32", [-1, 3]),
        ("label", "INT64", [-1]),
    ]
    rest = http_client.get_model_metadata("words")
    assert rest["platform"] == "python"
    assert rest["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in rest["outputs"]] == ["words", "shout"]


def test_pre_and_post_processing_around_an_onnx_model(
    server: ServerProcess,
    grpc_client: grpcclient.InferenceServerClient,
    http_client: httpclient.InferenceServerClient,
) -> None:
    pixels = np.array([[0, 64, 128, 255], [255, 0, 10, 20], [7, 7, 7, 7]], dtype=np.uint8)
    probabilities, label = expected_prepost(server.repo, pixels)

    result = grpc_infer(grpc_client, "prepost", pixels=pixels)
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, rtol=1e-5)
    np.testing.assert_array_equal(result.as_numpy("label"), label)

    tensor = httpclient.InferInput("pixels", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels)
    rest = http_client.infer("prepost", [tensor], outputs=[httpclient.InferRequestedOutput("label")])
    np.testing.assert_array_equal(rest.as_numpy("label"), label)
    assert rest.as_numpy("probabilities") is None  # only the requested output comes back


def test_a_pure_python_model_over_grpc_and_rest(
    grpc_client: grpcclient.InferenceServerClient, http_client: httpclient.InferenceServerClient
) -> None:
    text = np.array([b"hello edge world", b"one", "wei\u00df bier".encode()], dtype=object)
    result = grpc_infer(grpc_client, "words", text=text)
    np.testing.assert_array_equal(result.as_numpy("words"), np.array([3, 1, 2], dtype=np.int32))
    assert list(result.as_numpy("shout")) == [b"HELLO EDGE WORLD", b"ONE", b"WEISS BIER"]

    tensor = httpclient.InferInput("text", [3], "BYTES")
    tensor.set_data_from_numpy(text)
    rest = http_client.infer("words", [tensor])
    assert rest.as_numpy("words").tolist() == [3, 1, 2]


def test_requests_are_validated_against_the_declared_inputs(server: ServerProcess) -> None:
    status, body = rest_infer(server, "checked", [[1.0, 2.0]])
    assert status == 400
    assert "expects [-1, 3]" in body["error"]


# -- failed requests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marker", "status", "message"),
    [
        (-1, 400, "ValueError: x must not hold -1 (score.py, line 13)"),
        (-2, 500, "RuntimeError: the counter broke (score.py, line 15)"),
        (-3, 500, "output 'y' has dtype float64, declared FP32"),
        (-4, 500, "run() returned outputs ['z'], the script declares ['y']"),
        (-5, 500, "output 'y' has shape [1, 2], declared [-1, 3]"),
        (-6, 500, "its first dimension must be the batch size, 2"),
    ],
)
def test_a_failing_run_fails_that_request_only(
    server: ServerProcess, grpc_client: grpcclient.InferenceServerClient, marker: int, status: int, message: str
) -> None:
    rows = [[1.0, 2.0, 3.0], [4.0, 5.0, float(marker)]] if marker == -6 else [[1.0, 2.0, float(marker)]]
    got, body = rest_infer(server, "checked", rows)
    assert got == status
    assert message in body["error"]

    with pytest.raises(InferenceServerException) as info:
        grpc_infer(grpc_client, "checked", x=np.array(rows, dtype=np.float32))
    assert info.value.status() == ("StatusCode.INVALID_ARGUMENT" if status == 400 else "StatusCode.INTERNAL")
    assert message in info.value.message()

    # The next request is served as usual.
    got, body = rest_infer(server, "checked", [[1.0, 2.0, 3.0]])
    assert got == 200
    assert body["outputs"][0]["data"] == [2.0, 4.0, 6.0]
    assert grpc_client.is_model_ready("checked")


def test_concurrent_requests_to_a_batched_script(
    server: ServerProcess, grpc_client: grpcclient.InferenceServerClient
) -> None:
    """With max_batch_size, requests may be merged into one run(); each client still gets its own rows."""
    errors: list[BaseException] = []

    def client(seed: int) -> None:
        try:
            own = grpcclient.InferenceServerClient(server.grpc_url)
            for step in range(10):
                x = np.full((1 + step % 3, 3), seed * 100 + step, dtype=np.float32)
                y = grpc_infer(own, "checked", x=x).as_numpy("y")
                np.testing.assert_array_equal(y, x * 2)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


# -- versions that fail to load -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("broken_init", "init() failed: RuntimeError: the licence file is missing (score.py, line 6)"),
        ("syntax", "score.py, line 4: SyntaxError"),
        ("no_run", "run() is missing"),
        ("bad_declaration", "input 'x' has datatype 'FLOAT'"),
        ("fixed_batch", "batching needs a dynamic first dimension"),
    ],
)
def test_a_script_that_cannot_load_is_not_ready_with_the_reason(
    model: str, reason: str, server: ServerProcess, grpc_client: grpcclient.InferenceServerClient
) -> None:
    state, why = index_reason(grpc_client, model)
    assert state == "UNAVAILABLE"
    assert reason in why
    assert not grpc_client.is_model_ready(model)
    with pytest.raises(InferenceServerException) as info:
        grpc_infer(grpc_client, model, x=np.zeros(1, dtype=np.float32))
    assert info.value.status() == "StatusCode.UNAVAILABLE"
    assert reason in info.value.message()
    # The other models keep serving.
    assert grpc_client.is_model_ready("words")
    assert grpc_infer(grpc_client, "words", text=np.array([b"a b"], dtype=object)).as_numpy("words").tolist() == [2]


def test_a_fixed_script_loads(server: ServerProcess, grpc_client: grpcclient.InferenceServerClient) -> None:
    """A failed version is retried once its files change."""
    write_script(server.repo / "no_run" / "1", NO_RUN + "\n    def run(inputs):\n        return {'y': inputs['x']}\n")
    wait_until(lambda: grpc_client.is_model_ready("no_run"), what="the fixed script to load")
    x = np.array([1.5], dtype=np.float32)
    np.testing.assert_array_equal(grpc_infer(grpc_client, "no_run", x=x).as_numpy("y"), x)


# -- several scripts, and new versions -----------------------------------------------------------------


def test_two_script_models_do_not_share_a_module(grpc_client: grpcclient.InferenceServerClient) -> None:
    one = np.array([1], dtype=np.int64)
    a1, a2, b1 = (grpc_infer(grpc_client, m, x=one) for m in ("twin_a", "twin_a", "twin_b"))
    assert a1.as_numpy("who").tolist() == [b"twin_a/alpha"]
    assert b1.as_numpy("who").tolist() == [b"twin_b/beta"]
    assert a2.as_numpy("calls")[0] == a1.as_numpy("calls")[0] + 1
    assert b1.as_numpy("calls")[0] == a1.as_numpy("calls")[0]  # warmup plus one call each so far
    assert a1.as_numpy("module")[0] != b1.as_numpy("module")[0]


def offset_answer(client: grpcclient.InferenceServerClient, model: str) -> tuple[str, float, bytes]:
    """(version that answered, what it added to x, its module name)."""
    x = np.array([10.0], dtype=np.float32)
    result = grpc_infer(client, model, x=x)
    added = float(result.as_numpy("y")[0] - x[0])
    return result.get_response().model_version, added, result.as_numpy("module")[0]


def test_a_new_version_is_picked_up_while_serving(
    server: ServerProcess, grpc_client: grpcclient.InferenceServerClient
) -> None:
    version, added, module_v1 = offset_answer(grpc_client, "hot")
    assert (version, added) == ("1", 1.0)
    write_offset_version(server.repo / "hot" / "2", 2.0)
    wait_until(lambda: offset_answer(grpc_client, "hot")[:2] == ("2", 2.0), what="version 2 to answer")
    assert offset_answer(grpc_client, "hot")[2] != module_v1
    wait_until(lambda: not grpc_client.is_model_ready("hot", "1"), what="version 1 to unload")


def test_an_edited_script_or_neighbour_file_reloads_the_version(
    server: ServerProcess, grpc_client: grpcclient.InferenceServerClient
) -> None:
    folder = server.repo / "edited" / "1"
    _, added, first_module = offset_answer(grpc_client, "edited")
    assert added == 1.0

    staging = server.repo / "edited" / ".score.py"
    staging.write_text(script(OFFSET, answer=5.0))
    os.replace(staging, folder / "score.py")
    wait_until(lambda: offset_answer(grpc_client, "edited")[1] == 5.0, what="the edited script to serve")
    second_module = offset_answer(grpc_client, "edited")[2]
    assert second_module != first_module

    (folder / "offset.txt").write_text("100")
    wait_until(lambda: offset_answer(grpc_client, "edited")[1] == 105.0, what="the new offset.txt to be read")
    assert offset_answer(grpc_client, "edited")[2] not in (first_module, second_module)


# -- the backend and repository on their own --------------------------------------------------------------


def test_version_folders_pick_the_script_backend(tmp_path: Path) -> None:
    model = tmp_path / "mixed"
    write_script(model / "1", CHECKED)
    matmul_model(model / "2" / "model.onnx", features=3, outputs=3)
    write_script(model / "2", CHECKED)  # model.onnx wins when both are there and no backend is set
    (model / "3").mkdir()
    config = read_config(model)
    found = {v.version: v.path.name for v in versions_on_disk(model, config)}
    assert found == {1: "score.py", 2: "model.onnx"}

    write_config(model, backend="script")
    config = read_config(model)
    assert config.model_filename == "score.py"
    assert {v.version: v.path.name for v in versions_on_disk(model, config)} == {1: "score.py", 2: "score.py"}
    assert isinstance(load_backend(model / "2" / "score.py", config), ScriptBackend)

    write_config(model, backend="tensorflow")
    with pytest.raises(ModelLoadError, match="unknown backend 'tensorflow'"):
        read_config(model)


def test_bytecode_caches_do_not_count_as_a_change(tmp_path: Path) -> None:
    model = tmp_path / "m"
    write_script(model / "1", CHECKED)
    config = read_config(model)
    [before] = versions_on_disk(model, config)
    (model / "1" / "__pycache__").mkdir()
    (model / "1" / "__pycache__" / "helper.cpython-311.pyc").write_bytes(b"\0" * 64)
    [after] = versions_on_disk(model, config)
    assert after.signature == before.signature


def test_each_load_is_a_new_module_and_closing_forgets_it(tmp_path: Path) -> None:
    import sys

    path = write_script(tmp_path / "m" / "1", CHECKED)
    first = ScriptBackend(path, model_name="m")
    second = ScriptBackend(path, model_name="m")
    assert first.module_name != second.module_name
    assert first.module_name in sys.modules
    first.close()
    assert first.module_name not in sys.modules
    assert second.module_name in sys.modules
    assert second.inputs == (TensorSpec("x", "FP32", (-1, 3)),)
    y = second.predict({"x": np.ones((2, 3), dtype=np.float32)}, [])
    np.testing.assert_array_equal(y["y"], np.full((2, 3), 2, dtype=np.float32))
    with pytest.raises(InvalidInputError, match="x must not hold -1"):
        second.predict({"x": np.full((1, 3), -1, dtype=np.float32)}, [])
    with pytest.raises(InferenceFailedError, match="the counter broke"):
        second.predict({"x": np.full((1, 3), -2, dtype=np.float32)}, [])
    second.close()


DECLARED = (
    "INPUTS = [{'name': 'x', 'datatype': 'FP32', 'shape': [1]}]\n"
    "OUTPUTS = [{'name': 'y', 'datatype': 'FP32', 'shape': [1]}]\n"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("INPUTS = 3\nOUTPUTS = []\ndef init(): pass\ndef run(x): return x\n", "declare the script's inputs"),
        (
            "INPUTS = [{'name': 'x', 'datatype': 'FP32', 'dims': [1]}]\nOUTPUTS = []\n"
            "def init(): pass\ndef run(x): return x\n",
            "unknown key(s) ['dims']",
        ),
        (
            "INPUTS = [{'name': 'x', 'datatype': 'FP32', 'shape': [1]}] * 2\n"
            "OUTPUTS = [{'name': 'y', 'datatype': 'FP32', 'shape': [1]}]\ndef init(): pass\ndef run(x): return x\n",
            "declares ['x'] more than once",
        ),
        ("import no_such_module_here\n", "ModuleNotFoundError"),
        (DECLARED + "def init(a, b): pass\ndef run(x): return x\n", "init must be init() or init(model_dir)"),
        ("def init(): pass\ndef run(): return {}\n", "run must take one argument"),
        ("import sys\nsys.exit(3)\n", "SystemExit: 3 (score.py, line 2)"),
    ],
)
def test_load_errors_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m" / "1" / "score.py"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(ModelLoadError) as info:
        ScriptBackend(path, model_name="m")
    assert message in str(info.value)


def test_onnx_model_helper(tmp_path: Path) -> None:
    path = matmul_model(tmp_path / "model.onnx", features=4, outputs=2)
    model = OnnxModel(path)
    assert [spec.name for spec in model.inputs] == ["x"]
    assert model({"x": np.zeros((3, 4), dtype=np.float32)})["y"].shape == (3, 2)
