"""How the distribution API finds images: repository names, their tags and the manifest each reference names.

The image registry implements this protocol over its records; the `/v2/` routes only ever ask through it, so
they serve exactly the images the workspace knows and nothing else in the blob store.
"""

from __future__ import annotations

from typing import Protocol


class ImageResolver(Protocol):
    def repositories(self) -> list[str]:
        """Every image name, e.g. `iris` or `team/iris`."""
        ...

    def tags(self, repository: str) -> list[str]:
        """The versions of `repository` as strings, plus `latest`; NotFoundError for an unknown repository."""
        ...

    def resolve(self, repository: str, reference: str) -> str:
        """The manifest digest a tag or a digest of `repository` names; NotFoundError when it names none."""
        ...
