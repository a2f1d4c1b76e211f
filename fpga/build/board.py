"""The ICEBreaker top level: the UART bridge clocked at the target frequency by the UP5K's PLL.

The board's only oscillator is 12 MHz, so the `sync` domain comes from an SB_PLL40_PAD fed by the clock pin
(pin 35, the PLL's dedicated input); the design is held in reset until the PLL locks. The PLL settings are the
closest the iCE40 can make to `clock_hz` (the same search as icepll); `PllSettings.frequency` is what the
timing report is held against. nextpnr derives the PLL output's constraint from the 12 MHz input constraint.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal  # type: ignore[import-untyped]
from amaranth.lib import io  # type: ignore[import-untyped]
from amaranth.lib.cdc import ResetSynchronizer  # type: ignore[import-untyped]
from edgewise.fpga.errors import ToolchainError
from edgewise.fpga.hdl.uart import UartBridge

REFERENCE_HZ = 12e6


@dataclass(frozen=True, slots=True)
class PllSettings:
    divr: int
    divf: int
    divq: int
    filter_range: int
    frequency: float  # Hz

    @classmethod
    def closest(cls, target_hz: float, *, reference_hz: float = REFERENCE_HZ) -> PllSettings:
        """The SB_PLL40 settings (SIMPLE feedback) whose output is nearest `target_hz`."""
        best: PllSettings | None = None
        for divr in range(16):
            pfd = reference_hz / (divr + 1)
            if not 10e6 <= pfd <= 133e6:
                continue
            for divf in range(128):
                vco = pfd * (divf + 1)
                if not 533e6 <= vco <= 1066e6:
                    continue
                for divq in range(1, 7):
                    out = vco / 2**divq
                    if not 16e6 <= out <= 275e6:
                        continue
                    if best is None or abs(out - target_hz) < abs(best.frequency - target_hz):
                        best = cls(divr, divf, divq, _filter_range(pfd), out)
        if best is None or abs(best.frequency - target_hz) > 0.01 * target_hz:
            raise ToolchainError(f"the iCE40 PLL cannot make {target_hz / 1e6:g} MHz from 12 MHz", tool="icepll")
        return best


def _filter_range(pfd: float) -> int:
    for limit, value in ((17e6, 1), (26e6, 2), (44e6, 3), (66e6, 4), (101e6, 5)):
        if pfd < limit:
            return value
    return 6


class ICEBreakerTop(Elaboratable):  # type: ignore[misc]
    """The UART bridge on the ICEBreaker's UART pins, in a `sync` domain at `pll.frequency`."""

    def __init__(self, bridge: UartBridge, *, pll: PllSettings) -> None:
        self.bridge = bridge
        self.pll = pll

    def elaborate(self, platform: object) -> Module:
        m = Module()
        clk12 = platform.request("clk12", dir="-")  # type: ignore[attr-defined]
        uart = platform.request("uart", 0, dir={"rx": "-", "tx": "-"})  # type: ignore[attr-defined]
        m.submodules.uart_rx = uart_rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = uart_tx = io.Buffer("o", uart.tx)
        m.domains.sync = ClockDomain("sync")
        locked = Signal()
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=self.pll.divr,
            p_DIVF=self.pll.divf,
            p_DIVQ=self.pll.divq,
            p_FILTER_RANGE=self.pll.filter_range,
            io_PACKAGEPIN=clk12.io,
            i_RESETB=1,
            i_BYPASS=0,
            o_PLLOUTGLOBAL=ClockSignal("sync"),
            o_LOCK=locked,
        )
        m.submodules.reset = ResetSynchronizer(~locked, domain="sync")
        m.submodules.bridge = bridge = self.bridge
        m.d.comb += [bridge.rx.eq(uart_rx.i), uart_tx.o.eq(bridge.tx)]
        return m
