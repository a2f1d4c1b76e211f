"""The accelerator: a `wiring.Component` with an int8 input stream and an int32 output stream (docs/fpga.md).

Its logic depends only on the model's architecture and P; the model's numbers are the initial contents of the
weights, scale and offset memories (images.py), so a new model of the same architecture is a new set of memory
contents. Activations live in one more block RAM, two banks of `Layout.bank_size` words: layer l reads bank
l % 2 and writes the other; input beats are written into bank 0 as they arrive.

One inference at a time: `features` is ready until `in_features` beats have been taken, and again once the last
of the `out_features` output beats has been taken.
"""

from __future__ import annotations

from typing import Literal

from amaranth.hdl import Array, Cat, Module, Signal, signed  # type: ignore[import-untyped]
from amaranth.lib import stream, wiring  # type: ignore[import-untyped]
from amaranth.lib.fifo import SyncFIFOBuffered  # type: ignore[import-untyped]
from amaranth.lib.memory import Memory  # type: ignore[import-untyped]
from amaranth.lib.wiring import In, Out  # type: ignore[import-untyped]
from edgewise.fpga.errors import UnsupportedModelError
from edgewise.fpga.hdl.images import MemoryImage, memory_images, random_images
from edgewise.fpga.hdl.layout import Layout
from edgewise.fpga.hdl.mac import MacArray
from edgewise.fpga.hdl.requant import Requantizer
from edgewise.fpga.hdl.sequencer import Sequencer
from edgewise.fpga.ir import IntegerModel

MemoryInit = Literal["model", "random"]


class Accelerator(wiring.Component):  # type: ignore[misc]
    """Ports: `features: In(stream.Signature(signed(8)))`, `outputs: Out(stream.Signature(signed(32)))`."""

    def __init__(self, model: IntegerModel, *, parallelism: int, memory_init: MemoryInit = "model") -> None:
        self.layout = Layout.of(model.architecture, parallelism)
        if memory_init == "model":
            self.images = memory_images(model, parallelism)
        elif memory_init == "random":
            self.images = random_images(self.layout)
        else:
            raise UnsupportedModelError(f"memory_init must be 'model' or 'random', not {memory_init!r}")
        super().__init__({"features": In(stream.Signature(signed(8))), "outputs": Out(stream.Signature(signed(32)))})

    @property
    def parallelism(self) -> int:
        return self.layout.parallelism

    def elaborate(self, platform: object) -> Module:
        m = Module()
        layout = self.layout
        m.submodules.weights = weights = _rom(self.images["weights"])
        m.submodules.scale = scale = _rom(self.images["scale"])
        m.submodules.offset = offset = _rom(self.images["offset"])
        m.submodules.activations = activations = Memory(shape=signed(8), depth=2 * layout.bank_size, init=[])
        weight_read = weights.read_port()
        activation_read = activations.read_port()
        activation_write = activations.write_port()

        m.submodules.sequencer = sequencer = Sequencer(layout)
        m.submodules.mac = mac = MacArray(layout)
        m.submodules.requant = requant = Requantizer(layout, scale=scale.read_port(), offset=offset.read_port())
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=32, depth=layout.out_features)

        # issue -> stage 1 (memory data) -> MAC array
        m.d.comb += [weight_read.addr.eq(sequencer.weight_addr), activation_read.addr.eq(sequencer.activation_addr)]
        m.d.sync += [
            mac.step.eq(sequencer.step),
            mac.clear.eq(sequencer.clear),
            mac.layer.eq(sequencer.layer),
            mac.lanes.eq(sequencer.lanes),
        ]
        m.d.comb += [mac.activation.eq(activation_read.data), mac.weights.eq(weight_read.data)]
        m.d.comb += [requant.load.eq(mac.done), requant.load_layer.eq(mac.done_layer)]
        m.d.comb += requant.load_lanes.eq(mac.done_lanes)
        m.d.comb += [target.eq(source) for target, source in zip(requant.sums, mac.sums, strict=True)]

        # activation banks: input beats, requantized outputs, and a layer releasing its source bank
        written = [Signal(range(layout.bank_size + 1), name=f"bank{bank}_written") for bank in range(2)]
        m.d.comb += [sequencer.written[bank].eq(written[bank]) for bank in range(2)]
        written_array = Array(written)
        received = Signal(range(layout.in_features + 1))
        taken = Signal(range(layout.out_features))
        accept = Signal()
        m.d.comb += [
            self.features.ready.eq(received != layout.in_features),
            accept.eq(self.features.valid & self.features.ready),
        ]
        last_layer = requant.last
        destination = ~requant.layer[0]
        bank_bits = (layout.bank_size - 1).bit_length()
        with m.If(accept):
            m.d.comb += [
                activation_write.en.eq(1),
                activation_write.addr.eq(Cat(received[:bank_bits], 0)),
                activation_write.data.eq(self.features.payload),
            ]
            m.d.sync += [received.eq(received + 1), written[0].eq(written[0] + 1)]
        with m.Elif(requant.valid & ~last_layer):
            m.d.comb += [
                activation_write.en.eq(1),
                activation_write.addr.eq(Cat(written_array[destination][:bank_bits], destination)),
                activation_write.data.eq(requant.value[:8]),
            ]
            m.d.sync += written_array[destination].eq(written_array[destination] + 1)
        with m.If(sequencer.release):
            m.d.sync += written_array[sequencer.release_bank].eq(0)

        # the last layer's values leave through a FIFO, one inference deep
        m.d.comb += [
            fifo.w_en.eq(requant.valid & last_layer),
            fifo.w_data.eq(requant.value),
            self.outputs.payload.eq(fifo.r_data),
            self.outputs.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.outputs.ready),
        ]
        with m.If(self.outputs.valid & self.outputs.ready):
            with m.If(taken == layout.out_features - 1):
                m.d.sync += [taken.eq(0), received.eq(0)]
            with m.Else():
                m.d.sync += taken.eq(taken + 1)
        return m


def _rom(image: MemoryImage) -> Memory:
    return Memory(shape=image.width, depth=image.depth, init=list(image.words))
