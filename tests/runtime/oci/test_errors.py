"""The shared OCI readers raise their own errors on the device, and the workspace's errors through cloud."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from edgewise.cloud import errors as cloud_errors
from edgewise.cloud.images import extract as cloud_extract
from edgewise.runtime.oci import extract, oci
from edgewise.runtime.oci.errors import InvalidImageError, OciError, UnsafeImagePathError


def _layer(name: str) -> tuple[oci.VerifiedReader, str]:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    data = out.getvalue()
    descriptor = oci.Descriptor(media_type=oci.LAYER_TAR, digest=oci.sha256_digest(data), size=len(data))
    return oci.VerifiedReader(raw=io.BytesIO(data), descriptor=descriptor), oci.sha256_digest(data)


def test_runtime_errors_and_their_workspace_counterparts(tmp_path: Path) -> None:
    stream, diff_id = _layer("../escape")
    with pytest.raises(UnsafeImagePathError, match="escape"):
        extract.apply_layer(stream, media_type=oci.LAYER_TAR, diff_id=diff_id, root=tmp_path)
    stream, diff_id = _layer("../escape")
    with pytest.raises(cloud_errors.UnsafePathError, match="escape"):
        cloud_extract.apply_layer(stream, media_type=oci.LAYER_TAR, diff_id=diff_id, root=tmp_path)
    assert not (tmp_path.parent / "escape").exists()

    with pytest.raises(InvalidImageError):
        oci.check_digest("sha256:nothex")
    assert issubclass(UnsafeImagePathError, OciError)


def test_the_runtime_package_imports_no_cloud_code() -> None:
    code = (
        "import sys, edgewise.runtime.oci.unpack, edgewise.runtime.agent.images;"
        "print(sorted(m for m in sys.modules if m.startswith('edgewise.cloud')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
