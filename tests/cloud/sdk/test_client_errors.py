"""Client behaviour that needs no workspace: an unreachable service, defaults from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgewise.cloud.client import Client, default_token
from edgewise.cloud.errors import NotFoundError, ServiceUnavailableError

from tests.support import HOST, free_port


def test_a_closed_port_is_service_unavailable_with_a_hint() -> None:
    url = f"http://{HOST}:{free_port()}"
    with Client(url=url, token="t", timeout=5) as client:
        with pytest.raises(ServiceUnavailableError, match="edgewise up") as caught:
            client.health()
        assert url in str(caught.value)
        with pytest.raises(ServiceUnavailableError):
            client.download_blob("sha256:" + "0" * 64, Path("/nonexistent/never-written"))


def test_the_token_comes_from_the_environment_then_the_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGEWISE_TOKEN", raising=False)
    monkeypatch.setenv("EDGEWISE_DATA", str(tmp_path))
    assert default_token() is None
    (tmp_path / "token").write_text("from-file\n")
    assert default_token() == "from-file"
    monkeypatch.setenv("EDGEWISE_TOKEN", "from-env")
    assert default_token() == "from-env"


def test_uploading_a_missing_file_names_it(tmp_path: Path) -> None:
    client = Client(url=f"http://{HOST}:{free_port()}", token="t")
    with client, pytest.raises(NotFoundError, match=r"nope\.bin"):
        client.upload_files({"a.bin": tmp_path / "nope.bin"})
