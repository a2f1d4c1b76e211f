"""nextpnr's report and its too-large failure, on output saved from real nextpnr-ice40 runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from edgewise.fpga.build.report import ResourceReport, parse_report, raise_if_too_large
from edgewise.fpga.errors import DesignTooLargeError, ToolchainError

DATA = Path(__file__).resolve().parent.parent / "data" / "fpga"
REPORT = DATA / "nextpnr_report_16-32-5_p8.json"
OVERFLOW = DATA / "nextpnr_overflow_64-256-10_p8.log"


def test_report_resources_and_fmax() -> None:
    report = parse_report(REPORT)
    used, available = report.resources["ICESTORM_LC"]
    assert available == 5280 and 0 < used < available
    assert report.resources["ICESTORM_DSP"] == (8, 8)
    assert report.resources["ICESTORM_RAM"][1] == 30
    assert report.fits
    (clock,) = report.clocks.values()
    assert clock.target_mhz == pytest.approx(48.0, abs=0.01)
    assert report.fmax_mhz == clock.achieved_mhz > 0
    assert report.timing_met == (clock.achieved_mhz >= clock.target_mhz)
    assert "ICESTORM_LC" in report.summary() and "Fmax" in report.summary()


def test_report_from_text_dict_and_json_round_trip() -> None:
    text = REPORT.read_text()
    assert parse_report(text) == parse_report(json.loads(text)) == parse_report(str(REPORT))
    report = parse_report(REPORT)
    raw = report.to_json()
    assert raw["resources"]["ICESTORM_DSP"] == {"used": 8, "available": 8}
    assert raw["fits"] is True and raw["target_mhz"] == pytest.approx(48.0, abs=0.01)
    assert ResourceReport.from_json(json.loads(json.dumps(raw))) == report


def test_report_of_a_design_that_does_not_fit() -> None:
    raw = json.loads(REPORT.read_text())
    raw["utilization"]["ICESTORM_RAM"] = {"used": 41, "available": 30}
    with pytest.raises(DesignTooLargeError, match="ICESTORM_RAM 41 of 30") as caught:
        parse_report(raw)
    assert caught.value.resources["ICESTORM_RAM"] == (41, 30)


def test_clock_without_constraint_takes_the_target() -> None:
    raw = json.loads(REPORT.read_text())
    for clock in raw["fmax"].values():
        clock["constraint"] = 0
    report = parse_report(raw, target_hz=36e6)
    assert report.target_mhz == pytest.approx(36.0)


def test_malformed_report() -> None:
    with pytest.raises(ToolchainError, match="expected form"):
        parse_report({"utilization": {"ICESTORM_LC": {"used": 1}}})


def test_overflow_log_names_the_numbers() -> None:
    with pytest.raises(DesignTooLargeError) as caught:
        raise_if_too_large(OVERFLOW.read_text())
    message = str(caught.value)
    assert "ICESTORM_RAM: 55 used, 30 available" in message
    assert caught.value.resources["ICESTORM_RAM"] == (55, 30)
    assert caught.value.resources["ICESTORM_LC"] == (2541, 5280)


def test_log_of_a_design_that_fits_passes() -> None:
    fitting = OVERFLOW.read_text().replace("55/     30   183%", "11/     30    36%").splitlines()
    raise_if_too_large("\n".join(line for line in fitting if not line.startswith("ERROR")))
