"""The workspace's `/v2/` pull API over real HTTP: auth, manifests, blobs with ranges, tags and catalog."""

from __future__ import annotations

import json

from edgewise.cloud.images import oci

from tests.cloud.registry.conftest import Served
from tests.cloud.registry.support import TOKEN, basic


def test_base_needs_credentials_and_names_the_api_version(served: Served) -> None:
    with served.server.client(auth=False) as client:
        refused = client.get("/v2/")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Basic realm="edgewise"'
        assert refused.json()["errors"][0]["code"] == "UNAUTHORIZED"
        wrong = client.get("/v2/", headers={"Authorization": basic("anyone", "not-the-token")})
        assert wrong.status_code == 401
        assert wrong.json()["errors"][0]["code"] == "UNAUTHORIZED"
        assert client.get("/v2/iris/tags/list").status_code == 401
        with_basic = client.get("/v2/", headers={"Authorization": basic("device-7", TOKEN)})
        assert with_basic.status_code == 200
        assert with_basic.headers["docker-distribution-api-version"] == "registry/2.0"
    with served.server.client() as client:
        assert client.get("/v2/").status_code == 200


def test_manifest_by_tag_and_by_digest(served: Served) -> None:
    stored = served.store.path(served.v1.manifest_digest).read_bytes()
    with served.server.client() as client:
        by_tag = client.get("/v2/iris/manifests/1")
        assert by_tag.status_code == 200
        assert by_tag.content == stored
        assert by_tag.headers["content-type"] == oci.MANIFEST
        assert by_tag.headers["docker-content-digest"] == served.v1.manifest_digest
        assert int(by_tag.headers["content-length"]) == len(stored)
        assert oci.sha256_digest(by_tag.content) == served.v1.manifest_digest
        by_digest = client.get(f"/v2/iris/manifests/{served.v1.manifest_digest}")
        assert by_digest.content == stored
        latest = client.head("/v2/iris/manifests/latest")
        assert latest.status_code == 200
        assert latest.content == b""
        assert latest.headers["docker-content-digest"] == served.v2.manifest_digest
        assert int(latest.headers["content-length"]) == served.v2.manifest.size


def test_unknown_manifests_answer_the_spec_error(served: Served) -> None:
    with served.server.client() as client:
        for path in (
            "/v2/iris/manifests/9",
            f"/v2/iris/manifests/{served.other.manifest_digest}",  # another repository's image
            "/v2/nothing/manifests/1",
        ):
            answer = client.get(path)
            assert answer.status_code == 404, path
            assert answer.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        assert client.head("/v2/iris/manifests/9").status_code == 404


def test_names_with_slashes(served: Served) -> None:
    with served.server.client() as client:
        answer = client.get("/v2/team/vision/resnet/manifests/1")
        assert answer.headers["docker-content-digest"] == served.other.manifest_digest
        layer = served.other.layers[0]
        assert (
            client.get(f"/v2/team/vision/resnet/blobs/{layer.digest}").content
            == served.store.path(layer.digest).read_bytes()
        )
        assert client.get("/v2/team/vision/resnet/tags/list").json() == {
            "name": "team/vision/resnet",
            "tags": ["1", "latest"],
        }


def test_blobs_whole_and_in_ranges(served: Served) -> None:
    layer = served.v1.layers[0]
    content = served.store.path(layer.digest).read_bytes()
    assert len(content) > 1000
    url = f"/v2/iris/blobs/{layer.digest}"
    with served.server.client() as client:
        whole = client.get(url)
        assert whole.status_code == 200
        assert whole.content == content
        assert whole.headers["docker-content-digest"] == layer.digest
        assert whole.headers["accept-ranges"] == "bytes"
        head = client.head(url)
        assert head.status_code == 200
        assert int(head.headers["content-length"]) == len(content)
        assert head.content == b""
        partial = client.get(url, headers={"Range": "bytes=100-199"})
        assert partial.status_code == 206
        assert partial.content == content[100:200]
        assert partial.headers["content-range"] == f"bytes 100-199/{len(content)}"
        open_ended = client.get(url, headers={"Range": "bytes=1000-"})
        assert open_ended.content == content[1000:]
        suffix = client.get(url, headers={"Range": "bytes=-50"})
        assert suffix.status_code == 206
        assert suffix.content == content[-50:]
        beyond = client.get(url, headers={"Range": f"bytes={len(content) + 10}-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{len(content)}"
        config = client.get(f"/v2/iris/blobs/{served.v1.config_digest}")
        assert json.loads(config.content)["rootfs"]["diff_ids"] == list(served.v1.diff_ids)


def test_blobs_are_served_only_through_their_repository(served: Served) -> None:
    with served.server.client() as client:
        foreign = client.get(f"/v2/iris/blobs/{served.other.layers[0].digest}")
        assert foreign.status_code == 404
        assert foreign.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
        stray = client.get(f"/v2/iris/blobs/{served.stray_digest}")
        assert stray.status_code == 404
        assert stray.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
        assert client.head(f"/v2/iris/blobs/{served.stray_digest}").status_code == 404
        invalid = client.get("/v2/iris/blobs/sha256:nothex")
        assert invalid.status_code == 400
        assert invalid.json()["errors"][0]["code"] == "DIGEST_INVALID"
        # v2's layers are reachable through the tag `latest` as well as `2`
        assert client.get(f"/v2/iris/blobs/{served.v2.layers[-1].digest}").status_code == 200


def test_tags_list_pages_with_link_headers(served: Served) -> None:
    with served.server.client() as client:
        assert client.get("/v2/iris/tags/list").json() == {"name": "iris", "tags": ["1", "2", "latest"]}
        first = client.get("/v2/iris/tags/list", params={"n": 2})
        assert first.json()["tags"] == ["1", "2"]
        assert first.headers["link"] == '</v2/iris/tags/list?n=2&last=2>; rel="next"'
        following = client.get("/v2/iris/tags/list?n=2&last=2")
        assert following.json()["tags"] == ["latest"]
        assert "link" not in following.headers
        assert client.get("/v2/iris/tags/list?n=0").json()["tags"] == []
        unknown = client.get("/v2/nothing/tags/list")
        assert unknown.status_code == 404
        assert unknown.json()["errors"][0]["code"] == "NAME_UNKNOWN"
        assert client.get("/v2/iris/tags/list?n=many").status_code == 400


def test_catalog_pages(served: Served) -> None:
    with served.server.client() as client:
        assert client.get("/v2/_catalog").json() == {"repositories": ["iris", "team/vision/resnet"]}
        first = client.get("/v2/_catalog?n=1")
        assert first.json() == {"repositories": ["iris"]}
        assert first.headers["link"] == '</v2/_catalog?n=1&last=iris>; rel="next"'
        assert client.get("/v2/_catalog?n=1&last=iris").json() == {"repositories": ["team/vision/resnet"]}


def test_an_index_and_its_platform_manifests(served: Served) -> None:
    index = {
        "schemaVersion": 2,
        "mediaType": oci.INDEX,
        "manifests": [{**served.v1.manifest.to_json(), "platform": {"os": "linux", "architecture": "amd64"}}],
    }
    digest, _ = served.store.put_bytes(oci.canonical_json(index))
    served.resolver.images["multi"] = {"1": digest}
    try:
        with served.server.client() as client:
            answer = client.get("/v2/multi/manifests/1")
            assert answer.headers["content-type"] == oci.INDEX
            assert answer.headers["docker-content-digest"] == digest
            child = client.get(f"/v2/multi/manifests/{served.v1.manifest_digest}")  # addressed through the index
            assert child.status_code == 200
            assert child.headers["content-type"] == oci.MANIFEST
            assert client.get(f"/v2/multi/blobs/{served.v1.layers[0].digest}").status_code == 200
            assert client.get(f"/v2/multi/manifests/{served.v2.manifest_digest}").status_code == 404
    finally:
        del served.resolver.images["multi"]
