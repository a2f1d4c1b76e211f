"""The pull side of the OCI distribution API under `/v2/`, so devices, skopeo and container engines can pull
the workspace's images directly.

Only images the resolver knows are served, and a blob only through a repository one of whose images refers to
it, so the blob store's other contents (snapshots, artifacts) stay private. Every byte served comes from the
content-addressed blob store, which verified it against its digest when it was stored. Blobs are streamed from
their files (with HTTP Range support), never read into memory.

Authentication: the workspace token as `Authorization: Bearer <token>`, or HTTP Basic with any user name and the
token as password (what `docker login` and `skopeo --creds` send), or HTTP Basic with a device's id and secret
(what the edge agent sends). Device credentials open these pull routes only, never the rest of the API. Errors
use the distribution spec's body `{"errors": [{"code", "message", "detail"}]}`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import re
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any
from urllib.parse import urlencode

from edgewise.cloud.errors import AuthenticationError, InvalidInputError, NotFoundError, WorkspaceError
from edgewise.cloud.images import oci
from edgewise.cloud.images.oci import workspace_error
from edgewise.cloud.images.resolver import ImageResolver
from edgewise.cloud.store.blobs import BlobStore
from edgewise.runtime.oci.errors import OciError
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute

API_VERSION_HEADER = "Docker-Distribution-API-Version"
API_VERSION = "registry/2.0"
REALM = "edgewise"
_MANIFEST_TYPES = (oci.MANIFEST, oci.DOCKER_MANIFEST, oci.INDEX, oci.DOCKER_MANIFEST_LIST)
_INDEX_TYPES = (oci.INDEX, oci.DOCKER_MANIFEST_LIST)
_CACHE_LIMIT = 4096
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class RegistryError(Exception):
    """An error answered in the distribution spec's shape (`code` is one of the spec's error codes)."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"errors": [{"code": self.code, "message": self.message, "detail": None}]}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _unauthorized(message: str) -> RegistryError:
    return RegistryError(401, "UNAUTHORIZED", message, headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})


def _as_registry_error(error: Exception) -> RegistryError:
    if isinstance(error, OciError):
        error = workspace_error(error)
    if isinstance(error, RegistryError):
        return error
    if isinstance(error, AuthenticationError):
        return _unauthorized(str(error))
    if isinstance(error, NotFoundError):
        return RegistryError(404, "NAME_UNKNOWN", str(error))
    if isinstance(error, RequestValidationError):
        return RegistryError(400, "UNSUPPORTED", f"invalid request: {error.errors()[:3]}")
    if isinstance(error, WorkspaceError):
        return RegistryError(error.http_status, "UNSUPPORTED" if error.http_status < 500 else "UNKNOWN", str(error))
    raise error


class _RegistryRoute(APIRoute):
    """Answers errors in the spec's shape and labels every answer with the API version, whatever app mounts it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def registry_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except (RegistryError, WorkspaceError, RequestValidationError) as error:
                response = _as_registry_error(error).response()
            response.headers[API_VERSION_HEADER] = API_VERSION
            return response

        return registry_handler


DeviceLogin = Callable[[str, str], bool]


class RegistryCredentials:
    """A dependency accepting the workspace token as a bearer token or as a Basic password (any user name), and,
    when `device_login` is given, a device's id and secret as Basic credentials."""

    def __init__(self, *, token: str, device_login: DeviceLogin | None = None) -> None:
        self._expected = token.encode()
        self._device_login = device_login

    async def __call__(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if not header:
            raise _unauthorized("authentication required: log in with any user name and the workspace token")
        if scheme.lower() == "bearer":
            given = value.strip().encode()
        elif scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise _unauthorized("the Basic credentials are not valid base64") from None
            username, _, given = decoded.partition(b":")
            if not hmac.compare_digest(given, self._expected) and await self._is_device(username, given):
                return
        else:
            raise _unauthorized(f"unsupported authorization scheme {scheme!r}: use Basic or Bearer")
        if not hmac.compare_digest(given, self._expected):
            raise _unauthorized(
                "wrong credentials: the password is the workspace token (file 'token' in its data), "
                "or a device's secret with its id as user name"
            )

    async def _is_device(self, username: bytes, password: bytes) -> bool:
        if self._device_login is None or not username:
            return False
        try:
            user, secret = username.decode(), password.decode()
        except UnicodeDecodeError:
            return False
        # A salted hash per check: off the event loop.
        return await asyncio.to_thread(self._device_login, user, secret)


class _Images:
    """Manifests and the blobs they refer to, read from the blob store; manifests are immutable, so cached."""

    def __init__(self, *, resolver: ImageResolver, blobs: BlobStore) -> None:
        self.resolver = resolver
        self.blobs = blobs
        self._lock = threading.Lock()
        self._documents: dict[str, tuple[bytes, str, tuple[str, ...], tuple[str, ...]]] = {}

    def manifest(self, digest: str) -> tuple[bytes, str, tuple[str, ...], tuple[str, ...]]:
        """The manifest's bytes, media type, the blobs it refers to and (for an index) its child manifests."""
        with self._lock:
            cached = self._documents.get(digest)
        if cached is not None:
            return cached
        path = self.blobs.path(digest)
        if path.stat().st_size > oci.MAX_JSON_BYTES:
            raise InvalidInputError(f"manifest {digest} is larger than {oci.MAX_JSON_BYTES} bytes")
        data = path.read_bytes()
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InvalidInputError(f"the image's manifest {digest} is not JSON") from None
        if not isinstance(document, dict):
            raise InvalidInputError(f"the image's manifest {digest} is not a JSON object")
        media_type = document.get("mediaType") or (oci.INDEX if "manifests" in document else oci.MANIFEST)
        if media_type not in _MANIFEST_TYPES:
            raise InvalidInputError(f"the image's manifest {digest} has the unknown media type {media_type!r}")
        children: tuple[str, ...] = ()
        referenced: list[str] = []
        if media_type in _INDEX_TYPES:
            children = tuple(_digests(document.get("manifests")))
        else:
            referenced = [*_digests([document.get("config")]), *_digests(document.get("layers"))]
        entry = (data, str(media_type), tuple(referenced), children)
        with self._lock:
            if len(self._documents) >= _CACHE_LIMIT:
                self._documents.clear()
            self._documents[digest] = entry
        return entry

    def reachable(self, repository: str) -> set[str]:
        """Every manifest and blob digest that an image of `repository` refers to."""
        seen: set[str] = set()
        pending = {self.resolver.resolve(repository, tag) for tag in self.resolver.tags(repository)}
        while pending:
            digest = pending.pop()
            if digest in seen:
                continue
            seen.add(digest)
            try:
                _, _, referenced, children = self.manifest(digest)
            except NotFoundError:
                continue
            seen.update(referenced)
            pending.update(children)
        return seen

    def resolve(self, repository: str, reference: str) -> str:
        try:
            return self.resolver.resolve(repository, reference)
        except NotFoundError:
            # The platform manifests of an index are addressed by digest only; they belong to the repository too.
            if _DIGEST.fullmatch(reference) and reference in self.reachable(repository):
                return reference
            raise


def _digests(items: object) -> Iterable[str]:
    for item in items if isinstance(items, list) else []:
        digest = item.get("digest") if isinstance(item, dict) else None
        if isinstance(digest, str) and _DIGEST.fullmatch(digest):
            yield digest


def _page(items: list[str], n: str | None, last: str | None) -> tuple[list[str], bool]:
    """The lexically sorted `items` after `last`, at most `n` of them, and whether more follow."""
    ordered = sorted(set(items))
    if last:
        ordered = [item for item in ordered if item > last]
    if n is None:
        return ordered, False
    if not n.isdigit():
        raise RegistryError(400, "PAGINATION_NUMBER_INVALID", f"invalid page size n={n!r}: use a whole number")
    size = int(n)
    return ordered[:size], len(ordered) > size


def _paged(request: Request, key: str, values: list[str], extra: dict[str, str]) -> JSONResponse:
    n, last = request.query_params.get("n"), request.query_params.get("last")
    page, more = _page(values, n, last)
    headers: dict[str, str] = {}
    if more and page and n is not None:
        headers["Link"] = f'<{request.url.path}?{urlencode({"n": n, "last": page[-1]})}>; rel="next"'
    return JSONResponse({**extra, key: page}, headers=headers)


def _unknown_manifest(name: str, reference: str) -> RegistryError:
    return RegistryError(404, "MANIFEST_UNKNOWN", f"repository {name!r} has no manifest {reference!r}")


_NAME_PART = re.compile(r"[A-Za-z0-9]+(?:(?:\.|_|__|-+)[A-Za-z0-9]+)*")


def _check_name(name: str) -> str:
    if not name or not all(_NAME_PART.fullmatch(part) for part in name.split("/")):
        raise RegistryError(400, "NAME_INVALID", f"invalid repository name {name!r}")
    return name


def create_registry_router(
    *, resolver: ImageResolver, blobs: BlobStore, token: str, device_login: DeviceLogin | None = None
) -> APIRouter:
    """The `/v2/` routes; include the router at the application's root, it checks credentials itself.

    `device_login(id, secret)` says whether a device's credentials are valid; devices may then pull too.
    """
    images = _Images(resolver=resolver, blobs=blobs)
    router = APIRouter(
        route_class=_RegistryRoute,
        tags=["registry"],
        dependencies=[Depends(RegistryCredentials(token=token, device_login=device_login))],
    )

    @router.get("/v2/", summary="The distribution API's base: 200 when the credentials are good")
    def base() -> JSONResponse:
        return JSONResponse({})

    @router.get("/v2", include_in_schema=False)
    def base_without_slash() -> JSONResponse:
        return JSONResponse({})

    @router.get("/v2/_catalog", summary="Image names (`n` and `last` paginate)")
    def catalog(request: Request) -> JSONResponse:
        return _paged(request, "repositories", resolver.repositories(), {})

    @router.get("/v2/{name:path}/tags/list", summary="Tags of an image name (`n` and `last` paginate)")
    def tags(name: str, request: Request) -> JSONResponse:
        _check_name(name)
        try:
            values = resolver.tags(name)
        except NotFoundError as error:
            raise RegistryError(404, "NAME_UNKNOWN", str(error)) from None
        return _paged(request, "tags", values, {"name": name})

    @router.api_route(
        "/v2/{name:path}/manifests/{reference}", methods=["GET", "HEAD"], summary="A manifest by tag or digest"
    )
    def manifest(name: str, reference: str, request: Request) -> Response:
        _check_name(name)
        try:
            digest = images.resolve(name, reference)
            data, media_type, _, _ = images.manifest(digest)
        except NotFoundError:
            raise _unknown_manifest(name, reference) from None
        except InvalidInputError as error:
            raise RegistryError(400, "MANIFEST_INVALID", str(error)) from None
        headers = {
            "Docker-Content-Digest": digest,
            "ETag": f'"{digest}"',
            "Content-Length": str(len(data)),
        }
        body = b"" if request.method == "HEAD" else data
        return Response(content=body, media_type=media_type, headers=headers)

    @router.api_route(
        "/v2/{name:path}/blobs/{digest}", methods=["GET", "HEAD"], summary="A config or layer (Range supported)"
    )
    def blob(name: str, digest: str) -> FileResponse:
        _check_name(name)
        if not _DIGEST.fullmatch(digest):
            raise RegistryError(400, "DIGEST_INVALID", f"invalid digest {digest!r}: use sha256:<64 hex digits>")
        try:
            known = digest in images.reachable(name)
            path = blobs.path(digest) if known else None
        except NotFoundError:
            path = None
        if path is None:
            raise RegistryError(404, "BLOB_UNKNOWN", f"repository {name!r} has no blob {digest}")
        return FileResponse(
            path,
            media_type="application/octet-stream",
            headers={"Docker-Content-Digest": digest, "Cache-Control": "max-age=31536000"},
        )

    return router
