"""Manifest verification: every refusal has its code, and a valid manifest parses into typed specs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edgewise.runtime.agent.errors import ManifestError
from edgewise.runtime.agent.manifest import parse_manifest
from edgewise.runtime.agent.model import DesiredStatus, ModuleType, RestartPolicy
from edgewise.runtime.agent.signing import canonical_bytes, sign_document

KEY = Ed25519PrivateKey.generate()
DIGEST = "sha256:" + "ab" * 32


def document(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": "1",
        "deviceId": "cam-7",
        "version": 4,
        "modules": {
            "iris": {
                "type": "oci",
                "image": f"127.0.0.1:5000/models/iris@{DIGEST}",
                "status": "running",
                "restartPolicy": "on-failure",
                "env": {"OMP_NUM_THREADS": "1"},
                "settings": {"httpPort": 8000, "grpcPort": 8001, "maxRestarts": 3},
            }
        },
        "telemetry": {"timeToLiveSecs": 60, "maxBytes": 1000, "sampleRate": 0.5},
    }
    doc.update(changes)
    return doc


def parse(doc: dict[str, Any], *, key: Ed25519PrivateKey = KEY, last_version: int | None = None) -> Any:
    payload = json.dumps(sign_document(doc, key)).encode()
    return parse_manifest(payload, device_id="cam-7", public_key=KEY.public_key(), last_version=last_version)


def refusal(doc: dict[str, Any], **kwargs: Any) -> str:
    with pytest.raises(ManifestError) as caught:
        parse(doc, **kwargs)
    return caught.value.code


def test_a_signed_manifest_parses_into_typed_modules() -> None:
    manifest = parse(document())
    assert manifest.version == 4
    iris = manifest.modules["iris"]
    assert iris.type is ModuleType.OCI and iris.status is DesiredStatus.RUNNING
    assert iris.restart_policy is RestartPolicy.ON_FAILURE
    assert iris.digest == DIGEST
    assert iris.settings.http_port == 8000 and iris.settings.max_restarts == 3
    assert manifest.telemetry.time_to_live == 60 and manifest.telemetry.sample_rate == 0.5


def test_the_signature_covers_the_canonical_form_whatever_the_key_order() -> None:
    signed = sign_document(document(), KEY)
    reordered = dict(reversed(list(signed.items())))
    payload = json.dumps(reordered, indent=2).encode()
    assert parse_manifest(payload, device_id="cam-7", public_key=KEY.public_key()).version == 4
    assert b"signature" not in canonical_bytes(signed)


def test_unsigned_forged_and_altered_manifests_are_refused() -> None:
    unsigned = json.dumps(document()).encode()
    with pytest.raises(ManifestError) as caught:
        parse_manifest(unsigned, device_id="cam-7", public_key=KEY.public_key())
    assert caught.value.code == "unsigned"
    assert refusal(document(), key=Ed25519PrivateKey.generate()) == "bad-signature"
    altered = sign_document(document(), KEY)
    altered["version"] = 5
    with pytest.raises(ManifestError) as caught:
        parse_manifest(json.dumps(altered).encode(), device_id="cam-7", public_key=KEY.public_key())
    assert caught.value.code == "bad-signature"


def test_stale_wrong_device_and_malformed_manifests_are_refused() -> None:
    assert refusal(document(), last_version=4) == "stale"
    assert parse(document(), last_version=3).version == 4
    assert refusal(document(deviceId="other")) == "wrong-device"
    with pytest.raises(ManifestError) as caught:
        parse_manifest(b"{not json", device_id="cam-7", public_key=KEY.public_key())
    assert caught.value.code == "malformed"


@pytest.mark.parametrize(
    ("module_changes", "needle"),
    [
        ({"image": "127.0.0.1:5000/models/iris:latest"}, "by digest"),
        ({"status": "paused"}, "'status'"),
        ({"restartPolicy": "sometimes"}, "restartPolicy"),
        ({"settings": {"httpPort": 8000, "grpcPort": 8000}}, "must differ"),
        ({"settings": {"httpPort": 0, "grpcPort": 8001}}, "httpPort"),
        ({"env": {"1BAD": "x"}}, "'env'"),
    ],
)
def test_bad_module_fields_are_named(module_changes: dict[str, Any], needle: str) -> None:
    doc = document()
    doc["modules"]["iris"].update(module_changes)
    with pytest.raises(ManifestError) as caught:
        parse(doc)
    assert caught.value.code == "malformed"
    assert needle in str(caught.value)


def test_two_modules_cannot_share_a_port() -> None:
    doc = document()
    doc["modules"]["other"] = dict(doc["modules"]["iris"], settings={"httpPort": 9000, "grpcPort": 8001})
    with pytest.raises(ManifestError, match="both use port 8001"):
        parse(doc)
