"""A small real design with the Accelerator's port contract, for testing the virtual FPGA on its own.

`WeightedSums(n_in, n_out)` takes `n_in` int8 beats on `features` and emits `n_out` int32 beats on `outputs`:

    out[j] = (j + 1) * sum(x) + sum((i + 1) * x[i]) - j

It stalls on purpose: `features.ready` drops every third cycle and every output beat is followed by an idle
cycle, so a driver that ignores a handshake computes the wrong numbers. The stall pattern restarts with each
vector, so every vector takes the same number of cycles (`cycles_per_vector`).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


class WeightedSums(wiring.Component):
    def __init__(self, n_in: int, n_out: int) -> None:
        self.n_in = n_in
        self.n_out = n_out
        super().__init__({"features": In(stream.Signature(signed(8))), "outputs": Out(stream.Signature(signed(32)))})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        total = Signal(signed(32))
        weighted = Signal(signed(32))
        index = Signal(range(max(self.n_in, self.n_out) + 1))
        tick = Signal(range(3))
        idle = Signal()

        m.d.sync += tick.eq(tick + 1)
        with m.If(tick == 2):
            m.d.sync += tick.eq(0)

        with m.FSM():
            with m.State("TAKE"):
                m.d.comb += self.features.ready.eq(tick != 2)
                with m.If(self.features.valid & self.features.ready):
                    x = self.features.payload
                    m.d.sync += [
                        total.eq(total + x),
                        weighted.eq(weighted + x * (index + 1)),
                        index.eq(index + 1),
                    ]
                    with m.If(index == self.n_in - 1):
                        m.d.sync += index.eq(0)
                        m.next = "EMIT"
            with m.State("EMIT"):
                m.d.comb += [
                    self.outputs.valid.eq(~idle),
                    self.outputs.payload.eq(total * (index + 1) + weighted - index),
                ]
                m.d.sync += idle.eq(0)
                with m.If(self.outputs.valid & self.outputs.ready):
                    m.d.sync += [index.eq(index + 1), idle.eq(1)]
                    with m.If(index == self.n_out - 1):
                        m.d.sync += [index.eq(0), total.eq(0), weighted.eq(0), idle.eq(0), tick.eq(0)]
                        m.next = "TAKE"
        return m


def weighted_sums(x: np.ndarray, n_out: int) -> np.ndarray:
    """What `WeightedSums` computes, for one int8 vector."""
    values = np.asarray(x, dtype=np.int64)
    total = int(values.sum())
    weighted = int((values * np.arange(1, values.size + 1)).sum())
    return np.array([(j + 1) * total + weighted - j for j in range(n_out)], dtype=np.int32)


def cycles_per_vector(n_in: int, n_out: int) -> int:
    """Cycles from the one that takes the first feature to the one that takes the last output, both included."""
    take = n_in + (n_in - 1) // 2  # ready is low on every third cycle, starting with the third
    return take + 2 * n_out - 1  # each output beat but the last is followed by an idle cycle
