"""Images for the image store tests: model images pushed to CNCF Distribution, and hand-made images served by a
small distribution server on 127.0.0.1 that records what it was asked and can misbehave on purpose."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import tarfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from edgewise.cloud.images import ModelImageSpec, build_model_image
from edgewise.cloud.images.distribution import push_image
from edgewise.cloud.store.blobs import BlobStore
from edgewise.runtime.agent.images import host_platform
from edgewise.runtime.oci import oci
from onnx import TensorProto, helper, numpy_helper

from tests.support import HOST


def scale_model(factor: float) -> bytes:
    """A tiny ONNX model: y = x * factor over FP32 [batch, 4]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    k = numpy_helper.from_array(np.array([factor], dtype=np.float32), name="k")
    graph = helper.make_graph([helper.make_node("Mul", ["x", "k"], ["y"])], "scale", [x], [y], initializer=[k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def push_model_image(store: BlobStore, host: str, *, version: int, repository: str = "edge/scale", **auth: str) -> str:
    """Build the model image of `version` and push it to the registry at `host`; answers its digest reference."""
    spec = ModelImageSpec(
        model_name="scale",
        model_version=version,
        model_files={"model.onnx": scale_model(float(version)), "padding.bin": bytes(range(256)) * 64 * version},
        model_config={"max_batch_size": 0},
    )
    built = build_model_image(store, spec)
    digest = push_image(blobs=store, manifest=built.manifest, target=f"{host}/{repository}:v{version}", **auth)
    return f"{host}/{repository}@{digest}"


@dataclass(frozen=True)
class Entry:
    """One tar entry of a hand-made layer: a file (data), a folder, or a symbolic link (link)."""

    name: str
    data: bytes = b""
    link: str | None = None
    folder: bool = False


@dataclass
class HandImage:
    """A hand-made image: its blobs by digest and its manifest digest."""

    manifest: str
    blobs: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # digest -> (media type, bytes)

    def layer(self) -> str:
        kind = self.blobs[self.manifest][1]
        return str(json.loads(kind)["layers"][0]["digest"])


def _tar(entries: list[Entry]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.mtime = 0
            if entry.folder:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif entry.link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, entry.link
                tar.addfile(info)
            else:
                info.size, info.mode = len(entry.data), 0o644
                tar.addfile(info, io.BytesIO(entry.data))
    return out.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hand_image(entries: list[Entry], *, docker: bool = False, env: Mapping[str, str] | None = None) -> HandImage:
    """An image of one gzip layer holding `entries` (OCI media types, or Docker v2 ones with `docker`)."""
    plain = _tar(entries)
    layer = gzip.compress(plain, mtime=0)
    config = oci.canonical_json(
        {
            "architecture": host_platform().split("/")[1],
            "os": "linux",
            "config": {"Entrypoint": ["edgewise-score"], "Env": [f"{k}={v}" for k, v in (env or {}).items()]},
            "rootfs": {"type": "layers", "diff_ids": [_digest(plain)]},
        }
    )
    manifest_type = oci.DOCKER_MANIFEST if docker else oci.MANIFEST
    manifest = oci.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {
                "mediaType": oci.DOCKER_CONFIG if docker else oci.CONFIG,
                "digest": _digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": oci.DOCKER_LAYER_GZIP if docker else oci.LAYER_GZIP,
                    "digest": _digest(layer),
                    "size": len(layer),
                }
            ],
        }
    )
    image = HandImage(manifest=_digest(manifest))
    image.blobs[_digest(layer)] = ("application/octet-stream", layer)
    image.blobs[_digest(config)] = ("application/octet-stream", config)
    image.blobs[image.manifest] = (manifest_type, manifest)
    return image


def index_of(images: Mapping[str, HandImage]) -> HandImage:
    """A multi-platform OCI index over `images` (keyed by "os/architecture"), holding all their blobs."""
    manifests = []
    index = HandImage(manifest="")
    for name, image in images.items():
        os_name, arch = name.split("/")
        media_type, body = image.blobs[image.manifest]
        manifests.append(
            {
                "mediaType": media_type,
                "digest": image.manifest,
                "size": len(body),
                "platform": {"os": os_name, "architecture": arch},
            }
        )
        index.blobs.update(image.blobs)
    body = oci.canonical_json({"schemaVersion": 2, "mediaType": oci.INDEX, "manifests": manifests})
    index.manifest = _digest(body)
    index.blobs[index.manifest] = (oci.INDEX, body)
    return index


class TinyRegistry:
    """A distribution pull API on 127.0.0.1 over in-memory blobs (any repository name).

    Records every request's path and headers. Knobs: `cut_after` (send only that many bytes of a blob, then
    close), `tamper` (digests served with flipped bytes), `fail_with` (a status for every request), `token`
    (require `Bearer <token>`, issued at /token for Basic `user:password`).
    """

    def __init__(self) -> None:
        self.blobs: dict[str, tuple[str, bytes]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.cut_after: dict[str, int] = {}
        self.tamper: set[str] = set()
        self.fail_with: int | None = None
        self.token: str | None = None
        self.basic: tuple[str, str] = ("device", "secret")
        self._server = ThreadingHTTPServer((HOST, 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"{HOST}:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def add(self, image: HandImage) -> str:
        self.blobs.update(image.blobs)
        return f"{self.host}/hand/made@{image.manifest}"

    def ranges(self) -> list[str]:
        return [headers["Range"] for _, headers in self.requests if "Range" in headers]

    def start(self) -> TinyRegistry:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                registry.requests.append((self.path, dict(self.headers.items())))
                if self.path.startswith("/token"):
                    self._token()
                    return
                if registry.fail_with is not None:
                    self._send(registry.fail_with, b'{"errors": []}')
                    return
                if registry.token is not None and self.headers.get("Authorization") != f"Bearer {registry.token}":
                    realm = f"{registry.url}/token"
                    challenge = f'Bearer realm="{realm}",service="tiny",scope="repository:hand/made:pull"'
                    self._send(401, b'{"errors": []}', {"WWW-Authenticate": challenge})
                    return
                match = re.fullmatch(r"/v2/[a-z0-9/._-]+/(manifests|blobs)/(sha256:[0-9a-f]{64})", self.path)
                found = registry.blobs.get(match[2]) if match else None
                if match is None or found is None:
                    self._send(404, b'{"errors": [{"code": "BLOB_UNKNOWN"}]}')
                    return
                media_type, data = found
                if match[2] in registry.tamper:
                    data = bytes(b ^ 0x5A for b in data)
                start = 0
                requested = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if requested and match[1] == "blobs":
                    start = int(requested[1])
                headers = {"Content-Type": media_type, "Docker-Content-Digest": match[2]}
                if start:
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                body = data[start:]
                cut = registry.cut_after.pop(match[2], None)
                self._send(206 if start else 200, body, headers, cut=cut)

            def _token(self) -> None:
                user, password = registry.basic
                expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
                if self.headers.get("Authorization") != expected or registry.token is None:
                    self._send(401, b'{"errors": []}')
                    return
                self._send(200, json.dumps({"token": registry.token}).encode(), {"Content-Type": "application/json"})

            def _send(
                self, status: int, body: bytes, headers: Mapping[str, str] | None = None, cut: int | None = None
            ) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if cut is None else body[:cut])
                self.wfile.flush()
                if cut is not None:
                    self.close_connection = True

        return Handler


def rootfs_entries(root_parent: object) -> Iterator[str]:
    """Names in a store's rootfs folder (unpacked images, records, scratch folders)."""
    from pathlib import Path

    folder = Path(str(root_parent))
    yield from sorted(p.name for p in folder.iterdir()) if folder.is_dir() else iter(())
