"""A module's manifest type must match its image: `type: fpga` runs FPGA images only, and the other way round.
The check runs where every sandbox builds its command, so a mismatch is a start failure with a reason."""

from __future__ import annotations

from typing import Any

import pytest
from edgewise.runtime.agent.drivers.base import IMAGE_KIND_LABEL, Sandbox
from edgewise.runtime.agent.errors import ModuleError

from tests.runtime.agent.modules.conftest import LaunchFactory


def _with_kind(config: Any, kind: str | None) -> dict[str, Any]:
    labels = dict(config.get("Labels") or {})
    if kind is None:
        labels.pop(IMAGE_KIND_LABEL, None)
    else:
        labels[IMAGE_KIND_LABEL] = kind
    return {**config, "Labels": labels}


@pytest.mark.parametrize(("module_type", "image_kind"), [("fpga", None), ("fpga", "oci"), ("oci", "fpga")])
def test_a_module_type_that_does_not_match_its_image_is_refused(
    sandbox: Sandbox, make_launch: LaunchFactory, module_type: str, image_kind: str | None
) -> None:
    plain = make_launch()
    launch = make_launch(2, image_config=_with_kind(plain.image_config, image_kind), module_type=module_type)
    with pytest.raises(ModuleError, match=f"deploy it as a module of type '{image_kind or 'oci'}'"):
        sandbox.command(launch)


@pytest.mark.parametrize(("module_type", "image_kind"), [("fpga", "fpga"), ("oci", None), ("oci", "oci")])
def test_a_matching_module_type_starts(
    sandbox: Sandbox, make_launch: LaunchFactory, module_type: str, image_kind: str | None
) -> None:
    plain = make_launch()
    launch = make_launch(2, image_config=_with_kind(plain.image_config, image_kind), module_type=module_type)
    command = sandbox.command(launch)
    assert any("edgewise-score" in part or "edgewise.runtime.scoring" in part for part in command.argv)
