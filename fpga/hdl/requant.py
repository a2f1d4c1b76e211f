"""The requantizer: y = clamp((v*M + K) >> shift), one output neuron every two cycles, pipelined for the clock.

It takes a finished group's P sums in one cycle (into a shift register) and drains them one lane every two cycles
while the MAC array already accumulates the next group (the sequencer spaces groups by at least 2P cycles). The
multiply v*M is a shift-and-add tree in logic, one byte of M a cycle: the SB_MAC16 blocks all serve the MAC lanes,
v is only as wide as the architecture's largest in_features needs, and half the tree is half the logic cells. The
bias arrives folded into K (see images.py), so the product never needs the accumulator's full int32 range.

Stages: R0 takes the lane (two cycles) and reads M; R1-R4 sum the 8 partial products of a byte of M in a
registered tree; R5 holds v*M; R4 reads K and the shift, R5-R6 add K, R7-R8 shift, R9-R10 clamp (or apply ReLU to
the last layer's int32), and `valid` marks the result in R11. The scale and offset memories are read in neuron
order, each with its own counter.
"""

from __future__ import annotations

from itertools import pairwise

from amaranth.hdl import Array, Cat, Const, Elaboratable, Module, Mux, Signal, signed  # type: ignore[import-untyped]
from amaranth.lib.memory import ReadPort  # type: ignore[import-untyped]
from edgewise.fpga.hdl.layout import SHIFT_BITS, Layout

STAGES = 11  # registers from taking a lane (R0) to the result


class Requantizer(Elaboratable):  # type: ignore[misc]
    def __init__(self, layout: Layout, *, scale: ReadPort, offset: ReadPort) -> None:
        self.layout = layout
        self._scale = scale
        self._offset = offset
        parallelism = layout.parallelism
        layer_range = range(max(len(layout.layers), 2))
        # inputs
        self.load = Signal()
        self.sums = [Signal(signed(layout.sum_width), name=f"in{lane}") for lane in range(parallelism)]
        self.load_layer = Signal(layer_range)
        self.load_lanes = Signal(range(parallelism + 1))
        # outputs
        self.valid = Signal()
        self.layer = Signal(layer_range)
        self.last = Signal()  # the value is the last layer's, for the output FIFO
        self.value = Signal(signed(32), reset_less=True)

    def elaborate(self, platform: object) -> Module:
        m = Module()
        layout = self.layout
        parallelism = layout.parallelism
        width = layout.sum_width
        layer_shape = self.load_layer.shape()

        # R0: the staging shift register and the multiplier read; each lane stays two cycles (its `phase`)
        staging = [Signal(signed(width), name=f"staging{lane}", reset_less=True) for lane in range(parallelism)]
        remaining = Signal(range(parallelism + 1))
        phase = Signal()
        staged_layer = Signal(layer_shape)
        with m.If(self.load):
            m.d.sync += [remaining.eq(self.load_lanes), staged_layer.eq(self.load_layer), phase.eq(0)]
            m.d.sync += [slot.eq(value) for slot, value in zip(staging, self.sums, strict=True)]
        with m.Elif(remaining != 0):
            m.d.sync += phase.eq(~phase)
            with m.If(phase):
                m.d.sync += remaining.eq(remaining - 1)
                m.d.sync += [slot.eq(following) for slot, following in pairwise(staging)]
        busy = remaining != 0
        scale_pointer = self._counter(m, busy & phase, "scale_pointer")
        m.d.comb += self._scale.addr.eq(scale_pointer)

        # the layer and its ReLU and last-layer flags travel along the pipeline; so do the lane's two halves
        # (`halves`, `phases`) until R4, and from R5 on one `valid` per neuron
        staged_relu, staged_last = Signal(), Signal()
        with m.If(self.load):
            m.d.sync += [
                staged_relu.eq(Array(layer.relu for layer in layout.layers)[self.load_layer]),
                staged_last.eq(Array(layer.last for layer in layout.layers)[self.load_layer]),
            ]
        stages = range(1, STAGES + 1)
        halves = [busy] + [Signal(name=f"half{stage}") for stage in range(1, 5)]
        phases = [phase] + [Signal(name=f"phase{stage}") for stage in range(1, 5)]
        for stage in range(1, 5):
            m.d.sync += [halves[stage].eq(halves[stage - 1]), phases[stage].eq(phases[stage - 1])]
        valids = [Signal(name=f"valid{stage}") for stage in range(STAGES + 1)]
        m.d.sync += valids[5].eq(halves[4] & phases[4])
        layers = [staged_layer] + [Signal(layer_shape, name=f"layer{stage}") for stage in stages]
        relus = [staged_relu] + [Signal(name=f"relu{stage}") for stage in stages]
        lasts = [staged_last] + [Signal(name=f"last{stage}") for stage in stages]
        for stage in stages:
            if stage > 5:
                m.d.sync += valids[stage].eq(valids[stage - 1])
            m.d.sync += [layers[stage].eq(layers[stage - 1])]
            m.d.sync += [lasts[stage].eq(lasts[stage - 1]), relus[stage].eq(relus[stage - 1])]

        # R1 -> R4: v times one byte of M a cycle, as a registered tree of shifted partial products
        value1 = Signal(signed(width), reset_less=True)
        m.d.sync += value1.eq(staging[0])
        multiplier = self._scale.data
        byte = Mux(phases[1], multiplier[8:16], multiplier[:8])
        terms = [Mux(byte[bit], value1, 0) for bit in range(8)]
        spacing = 1
        stage = 1
        while len(terms) > 1:
            paired = []
            for index in range(0, len(terms), 2):
                total = Signal(signed(width + 2 * spacing), name=f"tree{stage}_{index // 2}", reset_less=True)
                m.d.sync += total.eq(terms[index] + (terms[index + 1] << spacing))
                paired.append(total)
            terms, spacing, stage = paired, spacing * 2, stage + 1
        # R4 -> R5: the low byte's product waits a cycle for the high byte's
        low = Signal.like(terms[0], name="low_product", reset_less=True)
        product = Signal(signed(max(len(terms[0]) + 9, layout.offset_width)), reset_less=True)  # in R5
        with m.If(~phases[4]):
            m.d.sync += low.eq(terms[0])
        m.d.sync += product.eq(low + (terms[0] << 8))

        # R4 reads K and the shift; R5 and R6 add K in two halves (a carry chain the width of K would not make
        # the clock); R7 shifts
        offset_pointer = self._counter(m, halves[4] & phases[4], "offset_pointer")
        m.d.comb += self._offset.addr.eq(offset_pointer)
        k_bits = layout.offset_width
        offset = self._offset.data[:k_bits].as_signed()
        shift = self._offset.data[k_bits : k_bits + SHIFT_BITS]
        split = k_bits // 2
        low6 = Signal(split + 1, reset_less=True)
        product_high6 = Signal(signed(len(product) - split), reset_less=True)
        offset_high6 = Signal(signed(k_bits - split), reset_less=True)
        shift6 = Signal(SHIFT_BITS, reset_less=True)
        m.d.sync += [
            low6.eq(product[:split] + offset.as_unsigned()[:split]),
            product_high6.eq(product[split:]),
            offset_high6.eq(offset[split:]),
            shift6.eq(shift),
        ]
        value7 = Signal(signed(layout.value_width), reset_less=True)
        shift7 = Signal(SHIFT_BITS, reset_less=True)
        high_sum = product_high6 + offset_high6 + low6[split]
        m.d.sync += [value7.eq(Cat(low6[:split], high_sum).as_signed()), shift7.eq(shift6)]
        # R7 and R8 shift by the multiple of 8, then by the rest (six mux levels are too many for one cycle)
        coarse = Signal(signed(layout.value_width), reset_less=True)
        fine = Signal(3, reset_less=True)
        m.d.sync += [coarse.eq(value7 >> Cat(Const(0, 3), shift7[3:])), fine.eq(shift7[:3])]
        shifted = Signal(signed(layout.value_width), reset_less=True)
        m.d.sync += shifted.eq(coarse >> fine)

        # R9 finds whether the value leaves int8 (wide OR and AND trees), R10 clamps to int8 (ReLU folded into
        # the lower bound) or applies ReLU to the last layer's int32
        high = shifted[7:]
        negative, above, below = Signal(), Signal(), Signal()
        low_byte = Signal(signed(8), reset_less=True)
        wide = Signal(signed(32), reset_less=True)
        m.d.sync += [
            negative.eq(shifted[-1]),
            above.eq(~shifted[-1] & high.any()),
            below.eq(shifted[-1] & ~high.all()),
            low_byte.eq(shifted[:8]),
            wide.eq(shifted[:32]),
        ]
        relu, last = relus[10], lasts[10]
        clamped = Mux(relu & negative, 0, Mux(above, 127, Mux(below, -128, low_byte)))
        m.d.sync += self.value.eq(Mux(last, Mux(relu & negative, 0, wide), clamped))
        m.d.comb += [self.valid.eq(valids[STAGES]), self.layer.eq(layers[STAGES]), self.last.eq(lasts[STAGES])]
        return m

    def _counter(self, m: Module, advance: object, name: str) -> Signal:
        """A neuron pointer that advances with `advance` and wraps after the network's last neuron."""
        pointer = Signal(range(self.layout.neuron_depth), name=name)
        with m.If(advance):
            m.d.sync += pointer.eq(Mux(pointer == self.layout.neurons - 1, 0, pointer + 1))
        return pointer
