"""The state machine that walks the network: layer by layer, group by group, input by input.

Each cycle it issues one step (read input `column` of the layer's source bank and the step's weight word), a
`clear` (the pipeline slot in which the MAC array hands a finished group to the requantizer and zeroes its
accumulators), or nothing. It only issues a step whose input has been written, which is how layer 0 starts while
input beats are still arriving and how a layer starts before the previous layer's last outputs are requantized.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Elaboratable, Module, Mux, Signal  # type: ignore[import-untyped]
from edgewise.fpga.hdl.layout import REQUANT_CYCLES, Layout


class Sequencer(Elaboratable):  # type: ignore[misc]
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        parallelism = layout.parallelism
        layers = len(layout.layers)
        widest_in = max(layer.in_features for layer in layout.layers)
        # inputs, driven by the accelerator: activations written so far into each bank
        self.written = Array(Signal(range(layout.bank_size + 1), name=f"written{bank}") for bank in range(2))
        # outputs, valid in the issue cycle
        self.step = Signal()
        self.clear = Signal()
        self.activation_addr = Signal(range(2 * layout.bank_size))
        self.weight_addr = Signal(range(layout.weight_depth))
        self.layer = Signal(range(max(layers, 2)))
        self.lanes = Signal(range(parallelism + 1))  # lanes of the group being cleared
        self.release = Signal()  # the layer has read its last input: its source bank is free
        self.release_bank = Signal()
        self._column = Signal(range(widest_in))
        self._group = Signal(range(max(layer.groups for layer in layout.layers)))
        self._clearing = Signal()
        self._gap = REQUANT_CYCLES * parallelism  # cycles between clears: the requantizer drains a group meanwhile
        self._spacing = Signal(range(self._gap + 1), init=self._gap)

    def elaborate(self, platform: object) -> Module:
        m = Module()
        layout = self.layout
        parallelism = layout.parallelism
        plans = layout.layers
        bank_bits = (layout.bank_size - 1).bit_length()

        # Every decision is a register or one gate away from one, for the clock's sake. The layer's numbers
        # (last column, last group, lanes of the last group) are registers loaded when the layer changes, and
        # `available` (input `column` of the source bank has been written) is judged a cycle early from a copy
        # of the bank's written count that may lag by a cycle: counts only grow while a layer reads its bank,
        # and a bank is freed only by its own reader, so a late count only delays a step.
        next_layer = Mux(self.layer == len(plans) - 1, 0, self.layer + 1)
        in_last = Signal.like(self._column, init=plans[0].in_features - 1)
        group_last = Signal.like(self._group, init=plans[0].groups - 1)
        lanes_last = Signal.like(self.lanes, init=plans[0].last_lanes)
        column_next = Signal(range(max(plan.in_features for plan in plans) + 1), init=1)
        last_column = Signal(init=plans[0].in_features == 1)
        last_group = Signal(init=plans[0].groups == 1)
        available = Signal()
        source_written = Signal.like(self.written[0])
        spacing_ok = Signal(init=1)
        bank = self.layer[0]
        m.d.comb += [
            self.step.eq(~self._clearing & available),
            self.clear.eq(self._clearing & spacing_ok),
            self.activation_addr.eq(Cat(self._column[:bank_bits], bank)),
            self.lanes.eq(Mux(last_group, lanes_last, parallelism)),
            self.release.eq(self.step & last_column & last_group),
            self.release_bank.eq(bank),
        ]

        m.d.sync += source_written.eq(self.written[bank])
        with m.If(self._clearing):  # column 0 of the next group: all written unless a new layer starts
            m.d.sync += available.eq(~last_group | (self.written[next_layer[0]] != 0))
        with m.Elif(self.step):
            m.d.sync += available.eq(~last_column & (source_written > column_next))
        with m.Else():
            m.d.sync += available.eq(source_written > self._column)

        with m.If(self.clear):
            m.d.sync += [self._spacing.eq(1), spacing_ok.eq(self._gap == 1)]
        with m.Elif(self._spacing < self._gap):
            m.d.sync += [self._spacing.eq(self._spacing + 1), spacing_ok.eq(self._spacing >= self._gap - 1)]

        with m.If(self.step):
            m.d.sync += self.weight_addr.eq(self.weight_addr + 1)
            with m.If(last_column):
                m.d.sync += [self._column.eq(0), column_next.eq(1), self._clearing.eq(1)]
                m.d.sync += last_column.eq(in_last == 0)
            with m.Else():
                m.d.sync += [self._column.eq(column_next), column_next.eq(column_next + 1)]
                m.d.sync += last_column.eq(column_next == in_last)

        with m.If(self.clear):
            m.d.sync += self._clearing.eq(0)
            with m.If(last_group):
                following = Signal.like(self.layer)
                m.d.comb += following.eq(next_layer)
                m.d.sync += [
                    self._group.eq(0),
                    self.layer.eq(following),
                    in_last.eq(Array(plan.in_features - 1 for plan in plans)[following]),
                    group_last.eq(Array(plan.groups - 1 for plan in plans)[following]),
                    lanes_last.eq(Array(plan.last_lanes for plan in plans)[following]),
                    last_column.eq(Array(plan.in_features == 1 for plan in plans)[following]),
                    last_group.eq(Array(plan.groups == 1 for plan in plans)[following]),
                    source_written.eq(self.written[following[0]]),
                ]
                with m.If(self.layer == len(plans) - 1):
                    m.d.sync += self.weight_addr.eq(0)
            with m.Else():
                m.d.sync += [self._group.eq(self._group + 1), last_group.eq(self._group + 1 == group_last)]
        return m
