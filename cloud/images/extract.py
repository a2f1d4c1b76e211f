"""Apply one layer of an untrusted image safely: `edgewise.runtime.oci.extract`, raising the workspace's errors."""

from __future__ import annotations

from edgewise.cloud.images.oci import translated
from edgewise.runtime.oci import extract as _extract
from edgewise.runtime.oci.extract import OPAQUE, WHITEOUT, entry_kind

__all__ = ["OPAQUE", "WHITEOUT", "apply_layer", "check_link_chains", "entry_kind", "entry_parts"]

apply_layer = translated(_extract.apply_layer)
check_link_chains = translated(_extract.check_link_chains)
entry_parts = translated(_extract.entry_parts)
