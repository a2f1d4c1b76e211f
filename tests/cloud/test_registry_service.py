"""The model registry on a real service: lineage, formats, conversion, concurrency, search, deletion rules."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from edgewise.cloud.errors import InvalidInputError, ModelInUseError, NotFoundError
from edgewise.cloud.store.records import RunSpec, RunStatus
from edgewise.cloud.store.sql import SqlStore

from examples.models import matmul_model
from tests.cloud.service import WorkspaceProcess

TRAIN = """
import pickle, pathlib
import numpy as np
from sklearn.linear_model import LogisticRegression
rng = np.random.default_rng(0)
x = rng.random((60, 4)).astype("float32")
y = (x[:, 0] > 0.5).astype(int)
model = LogisticRegression().fit(x, y)
pathlib.Path("outputs/model").mkdir(parents=True, exist_ok=True)
pathlib.Path("outputs/model.pkl").write_bytes(pickle.dumps(model))
pathlib.Path("outputs/model/config.json").write_text("{}")
pathlib.Path("outputs/model/weights.bin").write_bytes(b"123")
"""


@pytest.fixture(scope="module")
def trained_run(workspace: WorkspaceProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    source = tmp_path_factory.mktemp("train")
    (source / "train.py").write_text(textwrap.dedent(TRAIN))
    with workspace.client() as client:
        run = client.submit_run(experiment="registry", source=source, spec=RunSpec(script="train.py"))
        finished = client.wait_run(run.id, timeout=180)
        assert finished.status is RunStatus.COMPLETED, client.read_logs(run.id, stream="stderr")[0]
        return run.id


def test_register_from_a_run_records_lineage(workspace: WorkspaceProcess, trained_run: str, tmp_path: Path) -> None:
    with workspace.client() as client:
        model = client.register_model(name="folder-model", run_id=trained_run, path="outputs/model", tags={"a": "1"})
        assert model.version == 1 and model.run_id == trained_run and model.experiment == "registry"
        assert sorted(f.path for f in model.files) == ["model/config.json", "model/weights.bin"]
        assert model.format == "directory"
        files = client.download_model("folder-model", dest=tmp_path / "dl")
        assert sorted(p.relative_to(tmp_path / "dl").as_posix() for p in files) == sorted(f.path for f in model.files)
        assert (tmp_path / "dl" / "model" / "weights.bin").read_bytes() == b"123"
        with pytest.raises(NotFoundError, match=r"outputs/model\.pkl"):
            client.register_model(name="folder-model", run_id=trained_run, path="outputs/nothing.onnx")


def test_convert_a_scikit_learn_pickle_to_onnx(workspace: WorkspaceProcess, trained_run: str, tmp_path: Path) -> None:
    with workspace.client() as client:
        model = client.register_model(name="converted", run_id=trained_run, path="outputs/model.pkl", convert="onnx")
        assert model.format == "onnx" and model.framework == "scikit-learn"
        assert [f.path for f in model.files] == ["model.onnx"]
        assert "model.pkl" in model.properties["converted_from"]
        (path,) = client.download_model("converted", dest=tmp_path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.array([[0.9, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1]], dtype=np.float32)
    labels = session.run(None, {"input": x})[0]
    assert labels.tolist() == [1, 0]


def test_convert_refuses_what_it_cannot_convert(workspace: WorkspaceProcess, tmp_path: Path) -> None:
    not_sklearn = tmp_path / "thing.pkl"
    not_sklearn.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with workspace.client() as client:
        with pytest.raises(InvalidInputError, match="scikit-learn"):
            client.register_model(name="bad-convert", file=not_sklearn, convert="onnx")
        assert client.list_models(name="bad-convert") == []


def test_register_an_onnx_file_detects_format(workspace: WorkspaceProcess, tmp_path: Path) -> None:
    path = matmul_model(tmp_path / "model.onnx")
    with workspace.client() as client:
        model = client.register_model(name="uploaded", file=path, description="projection")
        assert model.format == "onnx" and model.description == "projection"
        assert model.files[0].path == "model.onnx" and model.run_id is None


def test_concurrent_registrations_get_unique_consecutive_versions(workspace: WorkspaceProcess, tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"w" * 100)
    script = tmp_path / "register.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from edgewise.cloud import Client
            with Client() as client:
                for _ in range(20):
                    client.register_model(name="contended", file=__import__("pathlib").Path({str(weights)!r}))
            """
        )
    )
    others = [subprocess.Popen([sys.executable, str(script)], env=workspace.env) for _ in range(2)]

    def register(_: int) -> int:
        with workspace.client() as client:
            return client.register_model(name="contended", file=weights).version

    with ThreadPoolExecutor(8) as pool:
        mine = list(pool.map(register, range(40)))
    assert all(p.wait(120) == 0 for p in others)
    assert len(set(mine)) == 40
    with workspace.client() as client:
        versions = sorted(m.version for m in client.list_models(name="contended"))
    assert versions == list(range(1, 81))


def test_tags_search_and_deletion_rules(workspace: WorkspaceProcess, tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"tags")
    with workspace.client() as client:
        for stage in ("dev", "prod", "prod"):
            client.register_model(name="tagged", file=weights, tags={"stage": stage})
        prod = client.list_models(name="tagged", tags={"stage": "prod"})
        assert [m.version for m in prod] == [3, 2]
        assert len(client.list_models(name="tagged", tags={"stage": None})) == 3
        client.tag_model("tagged", 1, set={"stage": "prod", "owner": "me"}, remove=["missing"])
        assert client.get_model("tagged", 1).tags == {"stage": "prod", "owner": "me"}
        assert client.get_model("tagged").version == 3

        # The deployment feature writes references into the same store; this is that write.
        store = SqlStore.open(f"sqlite:///{workspace.data_dir / 'workspace.db'}")
        try:
            store.add_model_reference("tagged", 2, kind="deployment", ref="berlin-prod")
        finally:
            store.close()
        with pytest.raises(ModelInUseError, match="berlin-prod"):
            client.delete_model("tagged", 2)
        assert client.get_model("tagged", 2).version == 2
        refs = client.model_references("tagged", 2)
        assert [(r.kind, r.name, r.active) for r in refs] == [("deployment", "berlin-prod", True)]

        client.delete_model("tagged", 1)
        with pytest.raises(NotFoundError):
            client.get_model("tagged", 1)
        assert client.register_model(name="tagged", file=weights).version == 4  # numbers are never reused
