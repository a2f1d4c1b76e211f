"""A pull-only client of the OCI distribution API over `http.client` (devices carry no HTTP library).

Only digest references are pulled: what the device runs is exactly what the signed manifest names. Credentials
are sent as HTTP Basic; a `Bearer realm=...` challenge is answered with a token fetched from the realm with the
same Basic credentials (the registry token flow). Transport failures and 5xx answers raise
`RegistryUnavailableError` (worth retrying); any other refusal raises `ImageError` naming the reference and the
HTTP status.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import urlencode, urljoin, urlsplit

from edgewise.runtime.agent.errors import ImageError, ImageIntegrityError, RegistryUnavailableError
from edgewise.runtime.oci import oci

MANIFEST_TYPES = (oci.MANIFEST, oci.INDEX, oci.DOCKER_MANIFEST, oci.DOCKER_MANIFEST_LIST)
_REFERENCE = re.compile(
    r"(?P<host>[A-Za-z0-9.-]+(?::[0-9]+)?|\[[0-9A-Fa-f:]+\](?::[0-9]+)?)/"
    r"(?P<repository>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"@(?P<digest>sha256:[0-9a-f]{64})"
)
_PARAM = re.compile(r'(\w+)="([^"]*)"')
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 5
_MAX_ERROR_BODY = 4096


@dataclass(frozen=True, kw_only=True)
class RegistryCredentials:
    """User name and password (or token) for the registry; sent as HTTP Basic, or traded for a bearer token."""

    username: str
    password: str


@dataclass(frozen=True, kw_only=True)
class ImageReference:
    """`host[:port]/repository@sha256:<hex>`, split."""

    host: str
    repository: str
    digest: str

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}@{self.digest}"


def parse_reference(text: str) -> ImageReference:
    """Split an image reference; only references pinned by digest are accepted."""
    match = _REFERENCE.fullmatch(text.strip())
    if match is None:
        raise ImageError(
            f"image reference {text!r} is not of the form host[:port]/repository@sha256:<64 hex digits>; "
            "devices pull images by digest only"
        )
    return ImageReference(host=match["host"], repository=match["repository"], digest=match["digest"])


class BlobResponse:
    """An open answer to a blob request: `offset` is where its bytes start (0, or the Range asked for)."""

    def __init__(self, *, connection: http.client.HTTPConnection, response: http.client.HTTPResponse, offset: int):
        self._connection = connection
        self._response = response
        self.offset = offset

    def read(self, size: int) -> bytes:
        try:
            return self._response.read(size)
        except (OSError, http.client.HTTPException) as error:
            raise RegistryUnavailableError(f"the download broke off: {error}") from None

    def close(self) -> None:
        self._response.close()
        self._connection.close()


class RegistryClient:
    """Fetches manifests and blobs; remembers per registry host the authorization that worked."""

    def __init__(
        self,
        *,
        credentials: RegistryCredentials | None = None,
        registry_url: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._credentials = credentials
        self._timeout = timeout
        self._plain_host: str | None = None
        self._plain_scheme = "https"
        if registry_url:
            parts = urlsplit(registry_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ImageError(f"registry URL {registry_url!r} is not http(s)://host[:port]")
            self._plain_host, self._plain_scheme = parts.netloc.rsplit("@", 1)[-1], parts.scheme
        self._authorization: dict[str, str] = {}
        self._lock = threading.Lock()

    def base_url(self, host: str) -> str:
        """`registry_url`'s scheme for its own host, https for every other one."""
        scheme = self._plain_scheme if host == self._plain_host else "https"
        return f"{scheme}://{host}"

    def manifest(self, ref: ImageReference, digest: str) -> tuple[bytes, str]:
        """The manifest (or index) `digest` of `ref`'s repository, verified, with its media type."""
        url = f"{self.base_url(ref.host)}/v2/{ref.repository}/manifests/{digest}"
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        connection, response = self._request(url, headers=headers, ref=ref, what=f"manifest {digest}")
        try:
            body = response.read(oci.MAX_JSON_BYTES + 1)
        except (OSError, http.client.HTTPException) as error:
            raise RegistryUnavailableError(f"reading manifest {digest} of {ref} broke off: {error}") from None
        finally:
            connection.close()
        if len(body) > oci.MAX_JSON_BYTES:
            raise ImageError(f"manifest {digest} of {ref} is larger than {oci.MAX_JSON_BYTES} bytes")
        if oci.sha256_digest(body) != digest:
            raise ImageIntegrityError(
                f"manifest {digest} of {ref} hashes to {oci.sha256_digest(body)}: the registry served other content"
            )
        declared: object = None
        try:
            declared = json.loads(body).get("mediaType")
        except (ValueError, AttributeError):
            raise ImageError(f"manifest {digest} of {ref} is not a JSON object") from None
        header = (response.getheader("Content-Type") or "").split(";")[0].strip()
        media_type = declared if isinstance(declared, str) and declared else header or oci.MANIFEST
        return body, media_type

    def blob(self, ref: ImageReference, digest: str, *, offset: int = 0) -> BlobResponse:
        """Open blob `digest`; from `offset` with a Range request when the registry honours it (206)."""
        url = f"{self.base_url(ref.host)}/v2/{ref.repository}/blobs/{digest}"
        headers = {"Range": f"bytes={offset}-"} if offset > 0 else {}
        connection, response = self._request(url, headers=headers, ref=ref, what=f"blob {digest}", range_ok=True)
        start = 0
        if response.status == 206:
            match = re.match(r"bytes (\d+)-", response.getheader("Content-Range") or "")
            start = int(match[1]) if match else -1
            if start != offset:
                connection.close()
                raise ImageError(f"blob {digest} of {ref}: the registry answered a range we did not ask for")
        return BlobResponse(connection=connection, response=response, offset=start)

    def _request(
        self, url: str, *, headers: dict[str, str], ref: ImageReference, what: str, range_ok: bool = False
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """GET `url` following redirects and answering one auth challenge; the caller closes the connection."""
        host = ref.host
        challenged = False
        for _ in range(_MAX_REDIRECTS + 2):
            sent = dict(headers)
            authorization = self._authorization.get(host) if urlsplit(url).netloc == host else None
            if authorization:
                sent["Authorization"] = authorization
            connection, response = self._open(url, sent, ref=ref, what=what)
            status = response.status
            if status == 200 or (range_ok and status == 206):
                return connection, response
            challenge = response.getheader("WWW-Authenticate") or ""
            location = response.getheader("Location")
            body = _drain(response)
            connection.close()
            if status in _REDIRECTS and location:
                url = urljoin(url, location)
                continue
            if status == 401 and not challenged:
                challenged = True
                header = self._answer(challenge, ref=ref)
                if header is not None and header != authorization:
                    with self._lock:
                        self._authorization[host] = header
                    continue
            if status == 416 and range_ok:
                headers = {k: v for k, v in headers.items() if k != "Range"}
                continue
            raise _status_error(status, body, ref=ref, what=what)
        raise ImageError(f"{what} of {ref}: the registry redirected too many times")

    def _answer(self, challenge: str, *, ref: ImageReference) -> str | None:
        """The Authorization header that answers a 401 challenge, or None when there is none to try."""
        scheme, _, rest = challenge.partition(" ")
        basic = self._basic()
        if scheme.lower() == "basic":
            return basic
        if scheme.lower() != "bearer":
            return None
        params = dict(_PARAM.findall(rest))
        realm = params.pop("realm", "")
        if not realm:
            return None
        url = realm + ("&" if "?" in realm else "?") + urlencode({k: v for k, v in params.items() if v})
        sent = {"Authorization": basic} if basic else {}
        connection, response = self._open(url, sent, ref=ref, what="a token")
        try:
            body = response.read(_MAX_ERROR_BODY * 16)
        except (OSError, http.client.HTTPException) as error:
            raise RegistryUnavailableError(f"the token service {realm} for {ref} broke off: {error}") from None
        finally:
            connection.close()
        if response.status != 200:
            raise _status_error(response.status, body, ref=ref, what=f"a token from {realm}")
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        token = (answer.get("token") or answer.get("access_token")) if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise ImageError(f"the token service {realm} for {ref} answered no token")
        return f"Bearer {token}"

    def _basic(self) -> str | None:
        if self._credentials is None:
            return None
        pair = f"{self._credentials.username}:{self._credentials.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def _open(
        self, url: str, headers: dict[str, str], *, ref: ImageReference, what: str
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImageError(f"{what} of {ref}: the registry pointed at {url!r}, which is not http(s)")
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(
                parts.netloc, timeout=self._timeout, context=ssl.create_default_context()
            )
        else:
            connection = http.client.HTTPConnection(parts.netloc, timeout=self._timeout)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("GET", path, headers={"User-Agent": "edgewise-agent", **headers})
            return connection, connection.getresponse()
        except (TimeoutError, OSError, http.client.HTTPException) as error:
            connection.close()
            raise RegistryUnavailableError(
                f"could not fetch {what} of {ref} from {parts.scheme}://{parts.netloc}: {error}"
            ) from None


def _drain(response: http.client.HTTPResponse) -> bytes:
    try:
        return response.read(_MAX_ERROR_BODY)
    except (OSError, http.client.HTTPException):
        return b""


def _status_error(status: int, body: bytes, *, ref: ImageReference, what: str) -> ImageError:
    detail = body.decode("utf-8", "replace").strip()[:300]
    message = f"the registry answered HTTP {status} for {what} of {ref}" + (f": {detail}" if detail else "")
    if status >= 500 or status == 429:
        return RegistryUnavailableError(message)
    if status in (401, 403):
        return ImageError(message + " (check the registry credentials of the connection string)")
    return ImageError(message)
