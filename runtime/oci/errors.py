"""Errors of the OCI readers, shared by the device agent and the workspace's image builder.

EdgewiseError
 └─ OciError                        anything wrong with an image or where it is read from
     ├─ InvalidImageError           malformed or tampered content: bad digest, size, media type, JSON, tar
     │   └─ UnsafeImagePathError    an entry or link that would escape the folder it is unpacked into
     └─ ImageNotFoundError          a blob, index entry or ref name the image should have is missing

The workspace maps them at its boundary onto its own errors (400 invalid_input, 400 unsafe_path, 404 not_found);
the agent maps them onto `ImageIntegrityError` / `ImageError`.
"""

from __future__ import annotations

from edgewise._exceptions import EdgewiseError


class OciError(EdgewiseError):
    """An image could not be read; the message names the image, blob or entry at fault."""


class InvalidImageError(OciError):
    """The image is malformed, truncated or does not match its digests."""


class UnsafeImagePathError(InvalidImageError):
    """An entry (name, symbolic or hard link) would land outside the folder it is unpacked into."""


class ImageNotFoundError(OciError):
    """Something the image refers to is not where it should be."""
