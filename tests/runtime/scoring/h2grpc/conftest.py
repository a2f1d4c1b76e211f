"""Every test here drives the native transport: without a C compiler and nghttp2's headers they skip (or fail in CI)."""

from __future__ import annotations

import pytest

from tests.support import require_native_grpc


@pytest.fixture(autouse=True)
def _native_transport() -> None:
    require_native_grpc()
