"""The accelerator behind a UART: the link a board driver talks over (the ICEBreaker's FTDI channel B).

Framing, 8N1 at `clock_hz / divisor` baud, one request at a time (the host sends a request only after it has read
the whole response to the previous one):

    request   in_features bytes: the quantized input vector, int8 in two's complement
    response  out_features * 4 bytes: the output vector, int32 little-endian
              then 4 bytes: the cycles the accelerator took (uint32 little-endian), from the first input beat
              accepted to the last output beat taken, as `edgewise.fpga.sim` counts them

A request is handed to the accelerator only once all its bytes have arrived, a beat a cycle, and output beats are
taken as soon as the accelerator offers them (into a FIFO that the transmitter drains), so the cycle count is the
accelerator's own, not the link's.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Elaboratable, Module, Mux, Signal  # type: ignore[import-untyped]
from amaranth.lib import wiring  # type: ignore[import-untyped]
from amaranth.lib.cdc import FFSynchronizer  # type: ignore[import-untyped]
from amaranth.lib.fifo import SyncFIFOBuffered  # type: ignore[import-untyped]
from amaranth.lib.wiring import In, Out  # type: ignore[import-untyped]
from edgewise.fpga.hdl.accelerator import Accelerator

CYCLE_COUNTER_BITS = 32


class UartReceiver(Elaboratable):  # type: ignore[misc]
    """Bytes from an 8N1 line; `valid` (a register) pulses for one cycle with each byte in `data`."""

    def __init__(self, divisor: int) -> None:
        if divisor < 4:
            raise ValueError(f"a UART divisor below 4 cycles a bit is too fast to sample, not {divisor}")
        self.divisor = divisor
        self.line = Signal(init=1)
        self.data = Signal(8)
        self.valid = Signal()

    def elaborate(self, platform: object) -> Module:
        m = Module()
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.line, line, init=1)
        timer = Signal(range(self.divisor))
        bits = Signal(range(10))
        shift = Signal(8)
        m.d.sync += self.valid.eq(0)
        with m.FSM():
            with m.State("idle"), m.If(~line):
                m.d.sync += timer.eq(self.divisor // 2)
                m.next = "start"
            with m.State("start"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):
                    m.next = "idle"  # a glitch, not a start bit
                with m.Else():
                    m.d.sync += [timer.eq(self.divisor - 1), bits.eq(0)]
                    m.next = "data"
            with m.State("data"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(bits == 8):
                    m.d.sync += self.valid.eq(line)  # a missing stop bit drops the byte
                    m.next = "idle"
                with m.Else():
                    m.d.sync += [shift.eq(Cat(shift[1:], line)), bits.eq(bits + 1), timer.eq(self.divisor - 1)]
        m.d.comb += self.data.eq(shift)
        return m


class UartTransmitter(Elaboratable):  # type: ignore[misc]
    """An 8N1 line from bytes: load `data` with `valid` while `ready`."""

    def __init__(self, divisor: int) -> None:
        self.divisor = divisor
        self.line = Signal(init=1)
        self.data = Signal(8)
        self.valid = Signal()
        self.ready = Signal()

    def elaborate(self, platform: object) -> Module:
        m = Module()
        timer = Signal(range(self.divisor))
        frame = Signal(10, init=0x3FF)
        remaining = Signal(range(11))
        m.d.comb += [self.ready.eq(remaining == 0), self.line.eq(frame[0])]
        with m.If(remaining == 0), m.If(self.valid):
            m.d.sync += [frame.eq(Cat(0, self.data, 1)), remaining.eq(10), timer.eq(self.divisor - 1)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [frame.eq(Cat(frame[1:], 1)), remaining.eq(remaining - 1), timer.eq(self.divisor - 1)]
        return m


class UartBridge(wiring.Component):  # type: ignore[misc]
    """`rx` and `tx` (idle high) carrying the framing in the module docstring to and from `accelerator`."""

    def __init__(self, accelerator: Accelerator, *, divisor: int) -> None:
        self.accelerator = accelerator
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        accelerator = self.accelerator
        layout = accelerator.layout
        m.submodules.accelerator = accelerator
        m.submodules.receiver = receiver = UartReceiver(self.divisor)
        m.submodules.transmitter = transmitter = UartTransmitter(self.divisor)
        m.submodules.results = results = SyncFIFOBuffered(width=32, depth=layout.out_features)
        m.d.comb += [receiver.line.eq(self.rx), self.tx.eq(transmitter.line)]

        # request bytes -> a FIFO, released to the accelerator as a whole so that it takes a beat a cycle
        m.submodules.request = request = SyncFIFOBuffered(width=8, depth=layout.in_features)
        releasing = Signal()
        features = accelerator.features
        m.d.comb += [
            request.w_en.eq(receiver.valid),
            request.w_data.eq(receiver.data),
            features.valid.eq(releasing & request.r_rdy),
            features.payload.eq(request.r_data),
            request.r_en.eq(releasing & features.ready),
        ]
        with m.If(features.valid & features.ready & (request.level == 1)):
            m.d.sync += releasing.eq(0)
        with m.Elif(request.level == layout.in_features):
            m.d.sync += releasing.eq(1)

        # outputs -> FIFO at once, and the cycle counter around them
        outputs = accelerator.outputs
        m.d.comb += [
            outputs.ready.eq(results.w_rdy),
            results.w_en.eq(outputs.valid),
            results.w_data.eq(outputs.payload),
        ]
        counting = Signal()
        cycles = Signal(CYCLE_COUNTER_BITS)
        taken = Signal(range(layout.out_features))
        # the first beat is noticed a cycle late (a register, for the clock's sake) and counted in
        accepted = Signal()
        m.d.sync += accepted.eq(features.valid & features.ready)
        last_beat = Signal()
        m.d.comb += last_beat.eq(outputs.valid & outputs.ready & (taken == layout.out_features - 1))
        with m.If(outputs.valid & outputs.ready):
            m.d.sync += taken.eq(Mux(last_beat, 0, taken + 1))
        with m.If(accepted & ~counting):
            m.d.sync += [counting.eq(1), cycles.eq(2)]
        with m.Elif(counting):
            m.d.sync += cycles.eq(cycles + 1)
            with m.If(last_beat):
                m.d.sync += counting.eq(0)

        # FIFO words, then the cycle count, as little-endian bytes
        word = Signal(32)
        byte_index = Signal(range(4))
        loaded = Signal()
        sent_words = Signal(range(layout.out_features + 1))
        all_sent = Signal()  # a register rather than a comparison, for the clock's sake
        count_ready = Signal()
        with m.If(last_beat):
            m.d.sync += count_ready.eq(1)
        m.d.comb += [transmitter.data.eq(word.word_select(byte_index, 8)), transmitter.valid.eq(loaded)]
        with m.If(loaded), m.If(transmitter.ready):
            m.d.sync += byte_index.eq(byte_index + 1)
            with m.If(byte_index == 3):
                m.d.sync += loaded.eq(0)
        with m.Elif(~all_sent):
            m.d.comb += results.r_en.eq(1)
            with m.If(results.r_rdy):
                m.d.sync += [word.eq(results.r_data), loaded.eq(1), byte_index.eq(0)]
                m.d.sync += [sent_words.eq(sent_words + 1), all_sent.eq(sent_words == layout.out_features - 1)]
        with m.Elif(count_ready & ~counting):
            m.d.sync += [word.eq(cycles), loaded.eq(1), byte_index.eq(0), count_ready.eq(0)]
            m.d.sync += [sent_words.eq(0), all_sent.eq(0)]
        return m


def divisor_for(clock_hz: float, baud: int) -> int:
    """Clock cycles per UART bit; the rate is `clock_hz / divisor`, within 2% of `baud` or refused."""
    divisor = round(clock_hz / baud)
    if divisor < 4 or abs(clock_hz / divisor - baud) > 0.02 * baud:
        raise ValueError(f"{baud} baud cannot be made from a {clock_hz / 1e6:g} MHz clock")
    return divisor
