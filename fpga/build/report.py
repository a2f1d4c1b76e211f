"""nextpnr's report as image metadata: resources used out of available, achieved Fmax against the target.

nextpnr-ice40 writes `--report report.json` only for a design it could place; one that does not fit stops earlier,
e.g. "Unable to place cell '...', no BELs remaining to implement cell type 'ICESTORM_RAM'" after logging
"ICESTORM_RAM: 55/ 30 183%" in its utilisation table. `raise_if_too_large` turns that message into a
`DesignTooLargeError` carrying the numbers, which come from the utilisation table nextpnr logs before packing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgewise.fpga.errors import DesignTooLargeError, ToolchainError

# The resources an accelerator uses, in the order a report lists them.
MAIN_RESOURCES = ("ICESTORM_LC", "ICESTORM_RAM", "ICESTORM_DSP", "SB_IO", "SB_GB", "ICESTORM_PLL")
_OVERFLOW = re.compile(
    r"[Dd]esign uses (\d+) (?:cells of type )?'?(\w+)'? (?:cells )?but (?:the )?device (?:only )?has (?:only )?(\d+)"
)
_NO_ROOM = re.compile(r"no BELs remaining to implement cell type '(\w+)'")
_UTILISATION = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class ClockTiming:
    achieved_mhz: float
    target_mhz: float

    @property
    def met(self) -> bool:
        return self.achieved_mhz >= self.target_mhz


@dataclass(frozen=True, slots=True)
class ResourceReport:
    resources: dict[str, tuple[int, int]]  # name -> (used, available)
    clocks: dict[str, ClockTiming]  # clock net -> Fmax against its constraint

    @property
    def fits(self) -> bool:
        return all(used <= available for used, available in self.resources.values())

    @property
    def fmax_mhz(self) -> float:
        """The slowest clock's achieved Fmax (the design has one clock)."""
        return min((clock.achieved_mhz for clock in self.clocks.values()), default=0.0)

    @property
    def target_mhz(self) -> float:
        return max((clock.target_mhz for clock in self.clocks.values()), default=0.0)

    @property
    def timing_met(self) -> bool:
        return all(clock.met for clock in self.clocks.values())

    def utilization(self, resource: str) -> float:
        used, available = self.resources.get(resource, (0, 0))
        return used / available if available else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "resources": {name: {"used": u, "available": a} for name, (u, a) in self.resources.items()},
            "clocks": {
                name: {"achieved_mhz": clock.achieved_mhz, "target_mhz": clock.target_mhz, "met": clock.met}
                for name, clock in self.clocks.items()
            },
            "fmax_mhz": self.fmax_mhz,
            "target_mhz": self.target_mhz,
            "timing_met": self.timing_met,
            "fits": self.fits,
        }  # fmt: skip

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ResourceReport:
        return cls(
            resources={name: (int(v["used"]), int(v["available"])) for name, v in raw["resources"].items()},
            clocks={
                name: ClockTiming(float(v["achieved_mhz"]), float(v["target_mhz"])) for name, v in raw["clocks"].items()
            },
        )

    def summary(self) -> str:
        parts = [f"{name} {used}/{available}" for name, (used, available) in self._main()]
        parts.append(f"Fmax {self.fmax_mhz:.1f} MHz (target {self.target_mhz:.1f})")
        return ", ".join(parts)

    def _main(self) -> list[tuple[str, tuple[int, int]]]:
        return [(name, self.resources[name]) for name in MAIN_RESOURCES if name in self.resources]


def parse_report(source: Path | str | dict[str, Any], *, target_hz: float | None = None) -> ResourceReport:
    """A `ResourceReport` from nextpnr's JSON report (a path, the JSON text, or the parsed object).

    Clock targets are nextpnr's constraints; `target_hz` stands in for a clock reported without one. A report of a
    design that does not fit raises DesignTooLargeError.
    """
    raw = _load(source)
    try:
        resources = {
            str(name): (int(value["used"]), int(value["available"])) for name, value in raw["utilization"].items()
        }
        clocks = {}
        for name, value in raw.get("fmax", {}).items():
            target = float(value.get("constraint") or 0.0) or (target_hz or 0.0) / 1e6
            clocks[str(name)] = ClockTiming(float(value["achieved"]), target)
    except (KeyError, TypeError, ValueError) as exc:
        raise ToolchainError(f"the nextpnr report is not in the expected form: {exc!r}", tool="nextpnr-ice40") from exc
    report = ResourceReport(resources=resources, clocks=clocks)
    if not report.fits:
        over = [f"{name} {used} of {available}" for name, (used, available) in resources.items() if used > available]
        raise DesignTooLargeError(
            f"the design does not fit the device: {', '.join(over)} ({report.summary()})", resources=resources
        )
    return report


def raise_if_too_large(log: str) -> None:
    """Raise DesignTooLargeError when nextpnr's output says the design does not fit; otherwise return."""
    resources = {name: (int(used), int(available)) for name, used, available in _UTILISATION.findall(log)}
    overflows = [(name, int(used), int(available)) for used, name, available in _OVERFLOW.findall(log)]
    for name, used, available in overflows:
        resources[name] = (used, available)
    over = [(name, used, available) for name, (used, available) in resources.items() if used > available]
    if not over and not overflows and not _NO_ROOM.search(log):
        return
    described = ", ".join(f"{name}: {used} used, {available} available" for name, used, available in over or overflows)
    main = [f"{name} {used}/{available}" for name, (used, available) in resources.items() if name in MAIN_RESOURCES]
    raise DesignTooLargeError(
        f"the design does not fit the device ({described}); utilisation: {', '.join(main)}. "
        "Lower the parallelism or use a smaller model.",
        resources=resources,
    )


def _load(source: Path | str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, dict):
        return source
    text = source.read_text() if isinstance(source, Path) else source
    if isinstance(source, str) and not source.lstrip().startswith("{"):
        text = Path(source).read_text()
    loaded = json.loads(text)
    if not isinstance(loaded, dict):
        raise ToolchainError("the nextpnr report is not a JSON object", tool="nextpnr-ice40")
    return loaded
