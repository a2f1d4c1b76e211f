"""Bitstreams for the ICEBreaker (iCE40 UP5K): full builds, nextpnr's report, and icebram weight patches."""

from edgewise.fpga.build.board import ICEBreakerTop, PllSettings
from edgewise.fpga.build.patch import (
    Template,
    build_template,
    count_instances,
    load_or_build_template,
    patch_bitstream,
    timed_patch,
)
from edgewise.fpga.build.report import ClockTiming, ResourceReport, parse_report, raise_if_too_large
from edgewise.fpga.build.synth import DEFAULT_BAUD, BuildResult, build_bitstream, write_rtl

__all__ = [
    "DEFAULT_BAUD",
    "BuildResult",
    "ClockTiming",
    "ICEBreakerTop",
    "PllSettings",
    "ResourceReport",
    "Template",
    "build_bitstream",
    "build_template",
    "count_instances",
    "load_or_build_template",
    "parse_report",
    "patch_bitstream",
    "raise_if_too_large",
    "timed_patch",
    "write_rtl",
]
