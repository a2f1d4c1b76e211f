"""Push images to and pull images from registries that speak the OCI distribution API (CNCF Distribution,
Harbor, ACR, ECR, or the workspace's own `/v2/`).

A push sends only the blobs the registry lacks (chunked uploads), then the manifest; every byte it sends is
read through a VerifiedReader, so a corrupted local blob stops the push. A pull verifies the manifest against
the digest asked for (or announced), and reads configs and layers lazily, each checked against its descriptor.

Plain HTTP is used only for loopback registries (127.0.0.1, localhost, ::1) and only with `insecure=True`;
anything else is HTTPS with certificate checks, so credentials never cross a network in clear text. Registries
asking for HTTP Basic get the given credentials; registries with a token service (`Bearer realm=...`) get a
token fetched with them.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

import httpx
from edgewise.cloud.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ServiceUnavailableError,
    WorkspaceError,
)
from edgewise.cloud.images import oci
from edgewise.cloud.images.builder import StoreBlobs
from edgewise.cloud.images.unpack import load_image
from edgewise.cloud.store.blobs import BlobStore

DEFAULT_CHUNK = 8 << 20
MANIFEST_ACCEPT = ", ".join(
    (oci.MANIFEST, oci.INDEX, oci.DOCKER_MANIFEST, oci.DOCKER_MANIFEST_LIST),
)
_INDEXES = (oci.INDEX, oci.DOCKER_MANIFEST_LIST)
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_TIMEOUT = httpx.Timeout(120.0, connect=15.0)
_DIGEST_REF = re.compile(r"sha256:[0-9a-f]{64}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True, kw_only=True)
class ImageReference:
    """`host[:port]/repository[:tag][@digest]`, e.g. `127.0.0.1:5000/team/iris:3`."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What the manifest URL names: the digest when given, else the tag (`latest` by default)."""
        return self.digest or self.tag or "latest"


@dataclass(frozen=True, kw_only=True)
class TransferEvent:
    """Progress of one blob: `done` of `size` bytes sent; `skipped` when the registry had it already."""

    digest: str
    size: int
    done: int
    skipped: bool = False


Progress = Callable[[TransferEvent], None]


def parse_reference(text: str) -> ImageReference:
    """Parse `[docker://]host[:port]/repository[:tag][@sha256:...]`; the host is required."""
    rest = text.removeprefix("docker://")
    host, slash, path = rest.partition("/")
    if not slash or not host or not path:
        raise InvalidInputError(f"invalid image reference {text!r}: use host:port/repository[:tag]")
    digest: str | None = None
    if "@" in path:
        path, _, digest = path.partition("@")
        if not _DIGEST_REF.fullmatch(digest):
            raise InvalidInputError(f"invalid digest in {text!r}: use @sha256:<64 hex digits>")
    tag: str | None = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, _, tag = path.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise InvalidInputError(f"invalid tag {tag!r} in {text!r}")
    if not path or any(not part for part in path.split("/")):
        raise InvalidInputError(f"invalid repository in image reference {text!r}")
    return ImageReference(host=host, repository=path, tag=tag, digest=digest)


def _base_url(host: str, insecure: bool) -> str:
    hostname = host[1 : host.index("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
    scheme = "http" if insecure and hostname.lower() in _LOOPBACK else "https"
    return f"{scheme}://{host}"


class _RegistryAuth(httpx.Auth):
    """Answers a registry's 401 challenge once per request: Basic credentials or a token from its token service."""

    requires_request_body = True  # a refused upload chunk is sent again with credentials

    def __init__(self, *, username: str | None, password: str | None) -> None:
        self._username = username
        self._password = password
        self._header: str | None = None  # the last header that worked, reused for the next requests

    def _basic(self) -> str | None:
        if self._username is None and self._password is None:
            return None
        pair = f"{self._username or ''}:{self._password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._header is not None:
            request.headers["Authorization"] = self._header
        response = yield request
        if response.status_code != 401:
            return
        scheme, _, rest = response.headers.get("www-authenticate", "").partition(" ")
        header: str | None = None
        if scheme.lower() == "basic":
            header = self._basic()
        elif scheme.lower() == "bearer":
            params = dict(_PARAM.findall(rest))
            realm = params.pop("realm", "")
            if not realm:
                return
            token_request = httpx.Request("GET", realm, params={k: v for k, v in params.items() if v})
            basic = self._basic()
            if basic is not None:
                token_request.headers["Authorization"] = basic
            token_response = yield token_request
            token_response.read()
            if token_response.status_code != 200:
                raise _error(token_response, f"the registry's token service {realm}")
            body = token_response.json()
            token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise AuthenticationError(f"the registry's token service {realm} answered no token")
            header = f"Bearer {token}"
        if header is None or header == request.headers.get("Authorization"):
            return
        self._header = header
        request.headers["Authorization"] = header
        yield request


def _client(ref: ImageReference, auth: _RegistryAuth, insecure: bool) -> httpx.Client:
    return httpx.Client(
        base_url=_base_url(ref.host, insecure), auth=auth, trust_env=False, timeout=_TIMEOUT, follow_redirects=True
    )


def _error(response: httpx.Response, what: str) -> WorkspaceError:
    """The cloud error for a registry's answer, carrying the registry's own messages."""
    status = response.status_code
    detail = f"HTTP {status}"
    try:
        payload = json.loads(response.read() or b"null")
        errors = payload.get("errors") if isinstance(payload, dict) else None
        if isinstance(errors, list) and errors:
            detail = "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}" for e in errors if isinstance(e, dict))
    except (ValueError, httpx.HTTPError):
        pass
    message = f"{what}: the registry answered {detail}"
    if status in (401, 403):
        return AuthenticationError(f"{message} (check the user name and password for this registry)")
    if status == 404:
        return NotFoundError(message)
    if status == 409:
        return ConflictError(message)
    if status >= 500:
        return ServiceUnavailableError(message)
    if 400 <= status < 500:
        return InvalidInputError(message)
    return WorkspaceError(message)


def _send(client: httpx.Client, method: str, url: str | httpx.URL, what: str, **kwargs: object) -> httpx.Response:
    try:
        return client.request(method, url, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as error:
        raise ServiceUnavailableError(f"{what}: cannot reach the registry at {client.base_url}: {error}") from None


def _location(response: httpx.Response, what: str) -> httpx.URL:
    location = response.headers.get("location")
    if not location:
        raise WorkspaceError(f"{what}: the registry answered {response.status_code} without a Location header")
    return response.url.join(location)


def _as_reader(blobs: oci.BlobReader | BlobStore) -> oci.BlobReader:
    return StoreBlobs(store=blobs) if isinstance(blobs, BlobStore) else blobs


def push_image(
    *,
    blobs: oci.BlobReader | BlobStore,
    manifest: oci.Descriptor,
    target: str,
    username: str | None = None,
    password: str | None = None,
    insecure: bool = True,
    progress: Progress | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> str:
    """Push the image `manifest` describes to `target` (`host:port/repo[:tag]`); answer the manifest digest."""
    ref = parse_reference(target)
    if ref.digest is not None and ref.digest != manifest.digest:
        raise InvalidInputError(f"target {target!r} names digest {ref.digest}, but the image is {manifest.digest}")
    if chunk_size < 1:
        raise InvalidInputError(f"invalid chunk size {chunk_size}: use a positive number of bytes")
    reader = _as_reader(blobs)
    with _client(ref, _RegistryAuth(username=username, password=password), insecure) as client:
        return _push_manifest(client, reader, ref.repository, manifest, ref.reference, progress, chunk_size)


def _push_manifest(
    client: httpx.Client,
    reader: oci.BlobReader,
    repository: str,
    manifest: oci.Descriptor,
    reference: str,
    progress: Progress | None,
    chunk_size: int,
) -> str:
    if manifest.size > oci.MAX_JSON_BYTES:
        raise InvalidInputError(f"manifest {manifest.digest} has {manifest.size} bytes, over {oci.MAX_JSON_BYTES}")
    with reader.open_blob(manifest) as stream:
        data = stream.read()
        stream.read_to_end()
    document = json.loads(data)
    if manifest.media_type in _INDEXES:
        for i, child in enumerate(document.get("manifests") or []):
            descriptor = oci.Descriptor.from_json(child, where=f"manifest {i} of index {manifest.digest}")
            _push_manifest(client, reader, repository, descriptor, descriptor.digest, progress, chunk_size)
    else:
        parts = [document.get("config"), *(document.get("layers") or [])]
        for i, part in enumerate(parts):
            descriptor = oci.Descriptor.from_json(part, where=f"blob {i} of manifest {manifest.digest}")
            _push_blob(client, reader, repository, descriptor, progress, chunk_size)
    what = f"pushing manifest {manifest.digest} to {repository}:{reference}"
    response = _send(
        client,
        "PUT",
        f"/v2/{repository}/manifests/{reference}",
        what,
        content=data,
        headers={"Content-Type": manifest.media_type},
    )
    if response.status_code not in (200, 201):
        raise _error(response, what)
    announced = response.headers.get("docker-content-digest")
    if announced and announced != manifest.digest:
        raise InvalidInputError(f"{what}: the registry stored it as {announced}; it may have rewritten the manifest")
    return manifest.digest


def _push_blob(
    client: httpx.Client,
    reader: oci.BlobReader,
    repository: str,
    blob: oci.Descriptor,
    progress: Progress | None,
    chunk_size: int,
) -> None:
    what = f"pushing blob {blob.digest} to {repository}"
    head = _send(client, "HEAD", f"/v2/{repository}/blobs/{blob.digest}", what)
    if head.status_code == 200:
        if progress is not None:
            progress(TransferEvent(digest=blob.digest, size=blob.size, done=blob.size, skipped=True))
        return
    if head.status_code != 404:
        raise _error(head, what)
    started = _send(client, "POST", f"/v2/{repository}/blobs/uploads/", what)
    if started.status_code != 202:
        raise _error(started, what)
    location = _location(started, what)
    try:
        offset = 0
        with reader.open_blob(blob) as stream:
            while chunk := stream.read(chunk_size):
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                }
                sent = _send(client, "PATCH", location, what, content=chunk, headers=headers)
                if sent.status_code != 202:
                    raise _error(sent, what)
                location = _location(sent, what)
                offset += len(chunk)
                if progress is not None:
                    progress(TransferEvent(digest=blob.digest, size=blob.size, done=offset))
            stream.read_to_end()
        done = _send(client, "PUT", location.copy_merge_params({"digest": blob.digest}), what)
        if done.status_code != 201:
            raise _error(done, what)
    except BaseException:
        with contextlib.suppress(httpx.HTTPError):
            client.delete(location)  # the registry frees the half-done upload; failure to do so is harmless
        raise


class RegistryBlobs:
    """A repository of a registry as a BlobReader: every blob is fetched when opened and verified while read."""

    def __init__(
        self,
        *,
        ref: ImageReference,
        username: str | None = None,
        password: str | None = None,
        insecure: bool = True,
    ) -> None:
        self.ref = ref
        self._insecure = insecure
        self._auth = _RegistryAuth(username=username, password=password)
        self._manifests: dict[str, bytes] = {}

    def fetch_manifest(self, reference: str) -> oci.Descriptor:
        """Fetch the manifest or index `reference` names and check it against the digest asked for or announced."""
        what = f"fetching manifest {self.ref.repository}:{reference} from {self.ref.host}"
        with _client(self.ref, self._auth, self._insecure) as client:
            try:
                request = client.build_request(
                    "GET", f"/v2/{self.ref.repository}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT}
                )
                response = client.send(request, stream=True)
            except httpx.HTTPError as error:
                raise ServiceUnavailableError(f"{what}: cannot reach the registry: {error}") from None
            try:
                if response.status_code != 200:
                    raise _error(response, what)
                data = _read_limited(response, oci.MAX_JSON_BYTES, what)
            finally:
                response.close()
        digest = oci.sha256_digest(data)
        expected = reference if _DIGEST_REF.fullmatch(reference) else response.headers.get("docker-content-digest")
        if expected and expected != digest:
            raise InvalidInputError(f"{what}: the manifest hashes to {digest}, not {expected}: it was tampered with")
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InvalidInputError(f"{what}: the manifest is not JSON") from None
        declared = document.get("mediaType") if isinstance(document, dict) else None
        media_type = declared or response.headers.get("content-type", "").split(";")[0].strip()
        self._manifests[digest] = data
        return oci.Descriptor(media_type=str(media_type), digest=digest, size=len(data))

    def open_blob(self, descriptor: oci.Descriptor) -> oci.VerifiedReader:
        cached = self._manifests.get(descriptor.digest)
        if cached is not None:
            return oci.VerifiedReader(raw=io.BytesIO(cached), descriptor=descriptor)
        what = f"fetching blob {descriptor.digest} from {self.ref.host}/{self.ref.repository}"
        client = _client(self.ref, self._auth, self._insecure)
        try:
            request = client.build_request(
                "GET", f"/v2/{self.ref.repository}/blobs/{descriptor.digest}", headers={"Accept-Encoding": "identity"}
            )
            response = client.send(request, stream=True)
        except httpx.HTTPError as error:
            client.close()
            raise ServiceUnavailableError(f"{what}: cannot reach the registry: {error}") from None
        if response.status_code != 200:
            try:
                raise _error(response, what)
            finally:
                response.close()
                client.close()
        return oci.VerifiedReader(
            raw=_ResponseStream(client=client, response=response, what=what), descriptor=descriptor
        )


class _ResponseStream:
    """A file-like view of a streamed response body, exactly as sent (no content decoding)."""

    def __init__(self, *, client: httpx.Client, response: httpx.Response, what: str) -> None:
        self._client = client
        self._response = response
        self._chunks: Iterator[bytes] = response.iter_raw()
        self._buffer = b""
        self._what = what

    def read(self, size: int = -1, /) -> bytes:
        try:
            while size < 0 or len(self._buffer) < size:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._buffer += chunk
        except httpx.HTTPError as error:
            raise ServiceUnavailableError(f"{self._what}: the download broke off: {error}") from None
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def close(self) -> None:
        self._response.close()
        self._client.close()


def _read_limited(response: httpx.Response, limit: int, what: str) -> bytes:
    parts: list[bytes] = []
    total = 0
    for chunk in response.iter_raw():
        total += len(chunk)
        if total > limit:
            raise InvalidInputError(f"{what}: the manifest is larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _pick_platform(index: dict[str, object], digest: str, platform: str) -> oci.Descriptor:
    os_name, _, arch = platform.partition("/")
    arch, _, variant = arch.partition("/")
    entries = index.get("manifests")
    choices = [
        oci.Descriptor.from_json(entry, where=f"manifest {i} of index {digest}")
        for i, entry in enumerate(entries if isinstance(entries, list) else [])
    ]
    offered: list[str] = []
    for choice in choices:
        wanted = choice.platform or {}
        offered.append(f"{wanted.get('os')}/{wanted.get('architecture')}")
        same = wanted.get("os") == os_name and wanted.get("architecture") == arch
        if same and (not variant or wanted.get("variant") == variant):
            return choice
    raise NotFoundError(f"index {digest} has no image for {platform}; it offers {offered}")


def pull_image(
    *,
    source: str,
    username: str | None = None,
    password: str | None = None,
    insecure: bool = True,
    platform: str = "linux/amd64",
) -> oci.OciImage:
    """The image at `source` (`[docker://]host:port/repo[:tag|@digest]`), manifest and config verified; its
    layers are fetched when opened through `image.blobs` and verified while read."""
    ref = parse_reference(source)
    blobs = RegistryBlobs(ref=ref, username=username, password=password, insecure=insecure)
    descriptor = blobs.fetch_manifest(ref.reference)
    if descriptor.media_type in _INDEXES:
        index = oci.read_json_blob(blobs, descriptor, what="image index")
        descriptor = blobs.fetch_manifest(_pick_platform(index, descriptor.digest, platform).digest)
    return load_image(blobs, descriptor)
