"""Pull one image from a distribution registry with two clients, doing the same work on either server.

- `http`: httpx fetches the manifest, the config and every layer, streaming each blob through sha256 and
  dropping the bytes, and fails when a digest does not match;
- `skopeo`: `skopeo copy docker://... dir:...` into a fresh folder on local disk, a third-party client that
  checks digests itself and writes what it pulls.

Throughput is the bytes of manifest, config and layers over the wall time of the whole pull, connection set-up
and (for skopeo) process start included, identical for both servers.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
CHUNK = 1 << 20
SKOPEO_TIMEOUT = 900.0


@dataclass(frozen=True, kw_only=True)
class Source:
    """One registry serving the image: `host:port`, repository, tag and, for a protected one, Basic creds."""

    label: str
    host: str
    repository: str
    tag: str
    user: str | None = None
    password: str | None = None

    def creds(self) -> tuple[str, str] | None:
        return None if self.user is None or self.password is None else (self.user, self.password)


def _fetch_blob(client: httpx.Client, source: Source, digest: str) -> int:
    """Stream one blob through sha256 into nothing; answers its size."""
    algorithm, _, expected = digest.partition(":")
    if algorithm != "sha256":
        raise RuntimeError(f"{source.label}: unexpected digest algorithm in {digest}")
    hasher, size = hashlib.sha256(), 0
    with client.stream("GET", f"/v2/{source.repository}/blobs/{digest}") as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"{source.label}: GET blob {digest} answered {response.status_code}")
        for chunk in response.iter_raw(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    if hasher.hexdigest() != expected:
        raise RuntimeError(f"{source.label}: blob {digest} arrived with sha256 {hasher.hexdigest()}")
    return size


def pull_http(source: Source) -> dict[str, Any]:
    """Manifest, config and layers over one keep-alive connection; answers bytes and seconds."""
    started = time.perf_counter()
    with httpx.Client(
        base_url=f"http://{source.host}", auth=source.creds(), trust_env=False, timeout=120.0
    ) as client:
        response = client.get(
            f"/v2/{source.repository}/manifests/{source.tag}", headers={"Accept": MANIFEST_TYPES}
        )
        if response.status_code != 200:
            raise RuntimeError(
                f"{source.label}: GET manifest answered {response.status_code}: {response.text}"
            )
        manifest = response.json()
        total = len(response.content)
        digests = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
        for digest in digests:
            total += _fetch_blob(client, source, digest)
    seconds = time.perf_counter() - started
    return {"bytes": total, "seconds": seconds}


def pull_skopeo(source: Source, dest: Path, env: dict[str, str]) -> dict[str, Any]:
    """`skopeo copy` into `dest` (removed first and after); answers bytes written and seconds."""
    shutil.rmtree(dest, ignore_errors=True)
    cmd = ["skopeo", "copy", "--quiet", "--src-tls-verify=false"]
    if source.user is not None and source.password is not None:
        cmd.append(f"--src-creds={source.user}:{source.password}")
    cmd += [f"docker://{source.host}/{source.repository}:{source.tag}", f"dir:{dest}"]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=SKOPEO_TIMEOUT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{source.label}: skopeo copy failed ({done.returncode}): {done.stderr[-2000:]}")
    total = sum(path.stat().st_size for path in dest.iterdir() if path.name != "version")
    shutil.rmtree(dest, ignore_errors=True)
    return {"bytes": total, "seconds": seconds}
