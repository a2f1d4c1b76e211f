"""Servers for the distribution tests: our `/v2/` router in a real uvicorn, and CNCF Distribution (docker-registry)."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import httpx
import pytest
import uvicorn
from edgewise.cloud.api.registry_v2 import create_registry_router
from edgewise.cloud.errors import NotFoundError
from edgewise.cloud.store.blobs import BlobStore
from fastapi import FastAPI

from tests.support import HOST, free_port, wait_until

TOKEN = "workspace-token-for-tests"
REGISTRY_USER = "pusher"
REGISTRY_PASSWORD = "registry-password"


@dataclass
class DictResolver:
    """Images by repository and tag; a digest reference resolves when one of the repository's tags names it."""

    images: dict[str, dict[str, str]] = field(default_factory=dict)

    def repositories(self) -> list[str]:
        return sorted(self.images)

    def tags(self, repository: str) -> list[str]:
        if repository not in self.images:
            raise NotFoundError(f"no image {repository!r}")
        return list(self.images[repository])

    def resolve(self, repository: str, reference: str) -> str:
        tags = self.images.get(repository)
        if tags is None:
            raise NotFoundError(f"no image {repository!r}")
        if reference in tags:
            return tags[reference]
        if reference in tags.values():
            return reference
        raise NotFoundError(f"image {repository!r} has no version {reference!r}")


class RouterServer:
    """The registry router of a FastAPI app, served by uvicorn on a socket bound here (no port race)."""

    def __init__(self, *, resolver: DictResolver, blobs: BlobStore) -> None:
        app = FastAPI()
        app.include_router(create_registry_router(resolver=resolver, blobs=blobs, token=TOKEN))
        self._sock = socket.socket()
        self._sock.bind((HOST, 0))
        self.port = int(self._sock.getsockname()[1])
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def host(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> RouterServer:
        self._thread.start()
        wait_until(lambda: self._server.started, what="uvicorn to start")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._sock.close()

    def client(self, *, auth: bool = True) -> httpx.Client:
        headers = {"Authorization": f"Bearer {TOKEN}"} if auth else {}
        return httpx.Client(base_url=f"http://{self.host}", headers=headers, trust_env=False, timeout=30.0)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (CI installs it)")
    return path


def skopeo(*args: str) -> str:
    result = subprocess.run([need_tool("skopeo"), *args], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"skopeo {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


class DockerRegistry:
    """CNCF Distribution on 127.0.0.1 with filesystem storage, optionally behind htpasswd (bcrypt) Basic auth."""

    def __init__(self, *, root: Path, auth: bool) -> None:
        self.root = root
        self.auth = auth
        self.storage = root / "storage"
        self.log_path = root / "registry.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> DockerRegistry:
        binary = need_tool("docker-registry")
        self.storage.mkdir(parents=True, exist_ok=True)
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.storage}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: {HOST}:{self.port}",
            "  secret: test-secret-not-used-elsewhere",
        ]
        if self.auth:
            hashed = bcrypt.hashpw(REGISTRY_PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
            (self.root / "htpasswd").write_text(f"{REGISTRY_USER}:{hashed}\n")
            lines += ["auth:", "  htpasswd:", "    realm: test-registry", f"    path: {self.root / 'htpasswd'}"]
        config = self.root / "config.yml"
        config.write_text("\n".join(lines) + "\n")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        wait_until(self._answers, timeout=60, what=f"docker-registry on {self.host}:\n{self.log()}")
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"docker-registry exited with {self.process.returncode}:\n{self.log()}")
        try:
            with httpx.Client(trust_env=False, timeout=5.0) as client:
                return client.get(f"http://{self.host}/v2/").status_code in (200, 401)
        except httpx.HTTPError:
            time.sleep(0.05)
            return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"

    def blob_file(self, digest: str) -> Path:
        hex_digits = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_digits[:2] / hex_digits / "data"

    def creds(self) -> list[str]:
        return [f"--creds={REGISTRY_USER}:{REGISTRY_PASSWORD}"] if self.auth else []

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)
