"""Images on the device: pulled by digest from an OCI registry, verified, cached, unpacked read-only, collected.

`registry.py` speaks the distribution API, `cache.py` keeps blobs by digest (resumable, verified), `store.py`
ties them together as `ImageStore`.
"""

from edgewise.runtime.agent.images.registry import ImageReference, RegistryCredentials, parse_reference
from edgewise.runtime.agent.images.store import ImageStore, UnpackedImage, host_platform

__all__ = ["ImageReference", "ImageStore", "RegistryCredentials", "UnpackedImage", "host_platform", "parse_reference"]
