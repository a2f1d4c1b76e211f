"""Model images for the end-to-end tests: tiny ONNX models packaged as OCI images and pushed to a registry.

Every version of the `scale` model computes `y = x * factor`, so an answer tells which version served it. An
image of version N is unique to N (its layers carry the version in their paths), so tampering with one image's
blobs never touches another's.
"""

from __future__ import annotations

import platform
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from edgewise.cloud.images import ModelImageSpec, build_model_image
from edgewise.cloud.images.distribution import push_image
from edgewise.cloud.store.blobs import BlobStore
from onnx import TensorProto, helper, numpy_helper

MODEL_NAME = "scale"
REPOSITORY = "e2e/scale"
INPUT = "x"
OUTPUT = "y"
WIDTH = 4
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def scale_model(factor: float) -> bytes:
    """An ONNX model with input `x` FP32 [-1, 4] and output `y = x * factor`."""
    x = helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", WIDTH])
    y = helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", WIDTH])
    k = numpy_helper.from_array(np.array([factor], dtype=np.float32), name="k")
    graph = helper.make_graph([helper.make_node("Mul", [INPUT, "k"], [OUTPUT])], "scale", [x], [y], initializer=[k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def factor_of(version: int) -> float:
    """The factor version N multiplies by: 10 * N, so answers of different versions never coincide."""
    return 10.0 * version


@dataclass(frozen=True, kw_only=True)
class PushedImage:
    """An image in the registry, named by digest."""

    reference: str  # "127.0.0.1:<port>/e2e/scale@sha256:..."
    digest: str  # the manifest digest
    model_version: int
    factor: float | None  # None: the model is broken
    layers: tuple[str, ...]  # layer digests, model files first


class ImageFactory:
    """Builds and pushes model images to a CNCF Distribution registry whose storage folder is local."""

    def __init__(self, *, registry_host: str, registry_storage: Path, work_dir: Path | None = None) -> None:
        self.registry_host = registry_host
        self.registry_storage = registry_storage
        self._work = work_dir or Path(tempfile.mkdtemp(prefix="e2e-images-"))
        self._store = BlobStore(root=self._work / "blobs")
        self._built: dict[tuple[int, bool], PushedImage] = {}
        self._lock = threading.Lock()

    def image(self, version: int, *, broken: bool = False, repository: str = REPOSITORY) -> PushedImage:
        """The image of model version `version` (built and pushed on first use); `broken`: model.onnx is garbage."""
        with self._lock:
            key = (version, broken)
            if key not in self._built:
                self._built[key] = self._build(version, broken=broken, repository=repository)
            return self._built[key]

    def _build(self, version: int, *, broken: bool, repository: str) -> PushedImage:
        factor = None if broken else factor_of(version)
        model = b"\x08\x07 this is not an ONNX model " * 40 if factor is None else scale_model(factor)
        spec = ModelImageSpec(
            model_name=MODEL_NAME,
            model_version=version,
            model_files={"model.onnx": model},
            model_config={"max_batch_size": 0},
            architecture=_ARCH.get(platform.machine(), "amd64"),
            title=f"scale v{version}{' (broken)' if broken else ''}",
        )
        built = build_model_image(self._store, spec)
        digest = push_image(
            blobs=self._store, manifest=built.manifest, target=f"{self.registry_host}/{repository}:v{version}"
        )
        return PushedImage(
            reference=f"{self.registry_host}/{repository}@{digest}",
            digest=digest,
            model_version=version,
            factor=factor,
            layers=tuple(layer.digest for layer in built.layers),
        )

    def blob_file(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes (CNCF Distribution's filesystem driver layout)."""
        hex_digits = digest.removeprefix("sha256:")
        return self.registry_storage / "docker/registry/v2/blobs/sha256" / hex_digits[:2] / hex_digits / "data"

    def tamper(self, image: PushedImage) -> str:
        """Replace the bytes of the image's model layer in the registry's storage by others of the same length.

        The registry keeps serving the blob under its old digest, so only a client that verifies digests notices.
        Returns the tampered layer's digest.
        """
        digest = image.layers[0]
        path = self.blob_file(digest)
        data = path.read_bytes()
        path.write_bytes(bytes(b ^ 0x5A for b in data))
        return digest
