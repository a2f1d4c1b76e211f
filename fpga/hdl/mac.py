"""P multiply-accumulate lanes, written so that Yosys' `ice40_dsp` folds each lane into one SB_MAC16.

Per lane: input registers (the DSP's A and B registers), the product register (its pipeline register), and an
accumulator with a hold input and a synchronous clear (its output register, OHOLD and OLOAD of zero). The array
has no load-and-add: a `clear` slot, one bubble per group, zeroes the accumulators while the requantizer takes
their sums.

Timing, counted from the cycle the sequencer issues a step (memory reads) at k: the memories' data at k+1 (stage
1, the inputs of this block), the input registers at k+2, the products at k+3, and the accumulators hold the step
from k+4. A clear issued at k makes `done` high at k+3, when the accumulators hold the finished group.
"""

from __future__ import annotations

from amaranth.hdl import Elaboratable, Module, Mux, ResetSignal, Signal, signed  # type: ignore[import-untyped]
from edgewise.fpga.hdl.layout import Layout


class MacArray(Elaboratable):  # type: ignore[misc]
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        parallelism = layout.parallelism
        # stage 1 inputs
        self.step = Signal()
        self.clear = Signal()
        self.layer = Signal(range(max(len(layout.layers), 2)))
        self.lanes = Signal(range(parallelism + 1))
        self.activation = Signal(signed(8))
        self.weights = Signal(8 * parallelism)
        # outputs
        self.sums = [
            Signal(signed(layout.sum_width), name=f"sum{lane}", reset_less=True) for lane in range(parallelism)
        ]
        self.done = Signal()
        self.done_layer = Signal.like(self.layer)
        self.done_lanes = Signal.like(self.lanes)

    def elaborate(self, platform: object) -> Module:
        m = Module()
        parallelism = self.layout.parallelism
        step2, clear2, step3, clear3 = Signal(), Signal(), Signal(), Signal()
        layer2, layer3 = Signal.like(self.layer), Signal.like(self.layer)
        lanes2, lanes3 = Signal.like(self.lanes), Signal.like(self.lanes)
        m.d.sync += [
            step2.eq(self.step), clear2.eq(self.clear), layer2.eq(self.layer), lanes2.eq(self.lanes),
            step3.eq(step2), clear3.eq(clear2), layer3.eq(layer2), lanes3.eq(lanes2),
        ]  # fmt: skip
        m.d.comb += [self.done.eq(clear3), self.done_layer.eq(layer3), self.done_lanes.eq(lanes3)]
        zero = clear3 | ResetSignal()  # the accumulators' reset is their synchronous clear (OLOAD of zero)
        for lane in range(parallelism):
            # no reset on the datapath: registers with a reset would stay out of the SB_MAC16
            activation = Signal(signed(8), name=f"a{lane}", reset_less=True)
            weight = Signal(signed(8), name=f"w{lane}", reset_less=True)
            product = Signal(signed(16), name=f"product{lane}", reset_less=True)
            total = self.sums[lane]
            m.d.sync += [
                activation.eq(self.activation),
                weight.eq(self.weights[8 * lane : 8 * lane + 8].as_signed()),
                product.eq(activation * weight),
            ]
            with m.If(step3 | zero):
                m.d.sync += total.eq(Mux(zero, 0, total + product))
        return m
