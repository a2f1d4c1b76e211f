"""Build part of the images benchmark: register a model, build its image twice, count what reached the store.

Build time is the wall time a client sees, from the POST that queues the build to the poll that finds the
activity succeeded (polled every 20 ms), next to the service's own start-to-end time of the activity. New blob
bytes are files that appeared under DATA/blobs during the build, so the rebuild of an unchanged model shows
whether the content-addressed store really added nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from edgewise.cloud.client import Client

POLL_SECONDS = 0.02
BUILD_TIMEOUT = 1800.0


def blob_files(data: Path) -> dict[str, int]:
    """Every blob file of the service's store with its size, keyed by path."""
    root = data / "blobs"
    sizes: dict[str, int] = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            try:
                sizes[path] = os.stat(path).st_size
            except FileNotFoundError:  # a temporary file that was renamed meanwhile
                continue
    return sizes


def _build(client: Client, data: Path, *, image: str, model: str, version: int) -> dict[str, Any]:
    before = blob_files(data)
    started = time.perf_counter()
    activity = client.build_image(name=image, model=model, model_version=version)
    done = client.wait_activity(activity.id, timeout=BUILD_TIMEOUT, poll=POLL_SECONDS)
    wall = time.perf_counter() - started
    if done.status.value != "succeeded" or done.result is None:
        raise RuntimeError(f"image build of {model}:{version} ended {done.status.value}: {done.error}")
    after = blob_files(data)
    new = {path: size for path, size in after.items() if path not in before}
    name, _, built_version = done.result.rpartition(":")
    built = client.get_image(name, int(built_version))
    service = None
    if done.started_at is not None and done.ended_at is not None:
        service = round(done.ended_at - done.started_at, 3)
    return {
        "image": built.ref,
        "manifest_digest": built.manifest_digest,
        "wall_seconds": round(wall, 3),
        "service_seconds": service,
        "image_size_bytes": built.size,
        "new_blobs": len(new),
        "new_blob_bytes": sum(new.values()),
    }


def build_twice(client: Client, data: Path, *, model_file: Path, model: str, image: str) -> dict[str, Any]:
    """Register `model_file` as `model`, build image `image` of it, then build again from the same version."""
    started = time.perf_counter()
    registered = client.register_model(name=model, file=model_file)
    register_seconds = time.perf_counter() - started
    first = _build(client, data, image=image, model=model, version=registered.version)
    second = _build(client, data, image=image, model=model, version=registered.version)
    return {
        "model": f"{model}:{registered.version}",
        "model_file_bytes": model_file.stat().st_size,
        "register_seconds": round(register_seconds, 3),
        "build": first,
        "rebuild_unchanged": {
            **second,
            "same_digest": second["manifest_digest"] == first["manifest_digest"],
            "added_no_blobs": second["new_blobs"] == 0,
        },
    }
