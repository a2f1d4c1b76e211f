"""The accelerator's interface, its memory layout, and the UART boundary."""

from __future__ import annotations

import re

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator
from edgewise.fpga.errors import UnsupportedModelError
from edgewise.fpga.hdl import Accelerator, Layout, MemoryImage, memory_images, memory_shapes, random_images
from edgewise.fpga.hdl.layout import MAX_SHIFT
from edgewise.fpga.hdl.uart import UartBridge, divisor_for
from edgewise.fpga.sim import simulate

from tests.fpga.hw_models import random_inputs, random_integer_model

PORTS = {"clk", "rst", "features__payload", "features__valid", "features__ready"} | {
    "outputs__payload",
    "outputs__valid",
    "outputs__ready",
}


def _rtlil(accelerator: Accelerator) -> str:
    return str(rtlil.convert(accelerator, name="top"))


def test_ports_are_the_documented_ones() -> None:
    text = _rtlil(Accelerator(random_integer_model((16, 32, 5), seed=1), parallelism=8))
    top = text[text.index("module \\top") :]
    top = top[: top.index("\nend\n")]
    found = {
        name: (int(width), direction, bool(signed))
        for width, direction, signed, name in re.findall(
            r"wire width (\d+) (input|output) \d+\s+(signed )?\\(\S+)", top
        )
    }
    assert set(found) == PORTS
    assert found["features__payload"] == (8, "input", True)
    assert found["outputs__payload"] == (32, "output", True)
    assert found["features__ready"] == (1, "output", False)


def test_logic_depends_only_on_architecture_and_parallelism() -> None:
    first = random_integer_model((7, 10, 3), seed=1)
    second = random_integer_model((7, 10, 3), seed=2)
    a, b = _rtlil(Accelerator(first, parallelism=3)), _rtlil(Accelerator(second, parallelism=3))
    assert a != b
    strip = re.compile(r"connect \\DATA \S+")  # memory contents
    assert strip.sub("", a) == strip.sub("", b)
    assert strip.sub("", a) == strip.sub("", _rtlil(Accelerator(first, parallelism=3, memory_init="random")))
    assert strip.sub("", a) != strip.sub("", _rtlil(Accelerator(first, parallelism=4)))


def test_layout_of_the_benchmark_shape() -> None:
    layout = Layout.of(((32, 16, True), (32, 32, True), (5, 32, False)), 8)
    assert [layer.groups for layer in layout.layers] == [4, 4, 1]
    assert layout.weight_steps == 224  # 16*32 + 32*32 + 32*5 = 1696 MACs over 8 lanes
    assert layout.weight_depth == 256 and layout.neuron_depth == 256
    assert layout.bank_size == 32
    assert layout.sum_width == 21  # 32 * 128 * 128 = 2**19 needs 21 signed bits
    assert layout.offset_word_width % 4 == 0
    with pytest.raises(UnsupportedModelError):
        Layout.of(((4, 3, True), (2, 5, False)), 2)


def test_memory_images_hold_the_model() -> None:
    model = random_integer_model((7, 10, 3), seed=3)
    images = memory_images(model, 3)
    layout = Layout.of(model.architecture, 3)
    assert {name: (image.width, image.depth) for name, image in images.items()} == memory_shapes(layout)
    weights = images["weights"].words
    first = model.layers[0].weights
    # step (layer 0, group 1, input 4): lanes hold neurons 3, 4, 5
    word = weights[1 * 7 + 4]
    assert [np.int8(np.uint8(word >> (8 * lane) & 0xFF)) for lane in range(3)] == [
        first[3 + lane, 4] for lane in range(3)
    ]
    # the last group of layer 0 has one neuron (9): the other lanes are zero
    assert weights[3 * 7 + 2] >> 8 == 0
    hidden = model.layers[0]
    k_bits = layout.offset_width
    offset = images["offset"].words[2]
    k = offset & ((1 << k_bits) - 1)
    k -= (k >> (k_bits - 1)) << k_bits
    assert k == int(hidden.bias[2]) * hidden.multiplier + 2 ** (min(hidden.shift, MAX_SHIFT) - 1)
    assert offset >> k_bits == min(hidden.shift, MAX_SHIFT)
    assert images["scale"].words[2] == hidden.multiplier
    assert images["scale"].words[10] == 1  # the last layer is not scaled
    assert images["offset"].words[10] == int(model.layers[1].bias[0]) & ((1 << k_bits) - 1)


def test_random_images_are_full_width_and_hex() -> None:
    layout = Layout.of(((32, 16, True), (5, 32, False)), 8)
    images = random_images(layout)
    assert images == random_images(layout)  # deterministic
    for name, image in images.items():
        assert image.width % 4 == 0 and image.depth % 256 == 0
        lines = image.to_hex().split()
        assert len(lines) == image.depth and {len(line) for line in lines} == {image.width // 4}
        assert MemoryImage.from_hex(image.to_hex(), width=image.width) == image, name


def test_uart_bridge_carries_a_request_and_its_response() -> None:
    model = random_integer_model((6, 9, 3), seed=3)
    rows = random_inputs(6, 2, seed=4)
    divisor = 5
    bridge = UartBridge(Accelerator(model, parallelism=4), divisor=divisor)
    responses: list[bytes] = []

    async def host(ctx):  # type: ignore[no-untyped-def]
        for row in rows:
            for byte in row.astype(np.uint8):
                for bit in [0, *((int(byte) >> index) & 1 for index in range(8)), 1]:
                    ctx.set(bridge.rx, bit)
                    await ctx.tick().repeat(divisor)
            received = []
            while len(received) < 4 * (model.out_features + 1):
                await ctx.tick().until(bridge.tx == 0)
                await ctx.tick().repeat(divisor // 2)
                value = 0
                for index in range(8):
                    await ctx.tick().repeat(divisor)
                    value |= ctx.get(bridge.tx) << index
                await ctx.tick().repeat(divisor)
                received.append(value)
            responses.append(bytes(received))

    simulator = Simulator(bridge)
    simulator.add_clock(1e-6)
    simulator.add_testbench(host)
    simulator.run()
    cycles = simulate(model, parallelism=4, inputs=rows).cycles
    for row, response, expected_cycles in zip(rows, responses, cycles, strict=True):
        values = np.frombuffer(response[: 4 * model.out_features], dtype="<i4")
        assert np.array_equal(values, model.forward(row[None])[0])
        assert int.from_bytes(response[-4:], "little") == expected_cycles


def test_uart_divisor() -> None:
    assert divisor_for(48e6, 1_000_000) == 48
    with pytest.raises(ValueError, match="baud"):
        divisor_for(12e6, 4_000_000)


def test_streams_with_gaps_and_backpressure() -> None:
    """Input beats with gaps, outputs taken only now and then: the values are still the reference's."""
    model = random_integer_model((7, 10, 3), seed=8)
    rows = random_inputs(7, 3, seed=9)
    dut = Accelerator(model, parallelism=3)
    rng = np.random.default_rng(10)
    got: list[list[int]] = []

    async def host(ctx):  # type: ignore[no-untyped-def]
        for row in rows:
            sent, values = 0, []
            while len(values) < model.out_features:
                offering = sent < len(row) and rng.random() < 0.5
                taking = bool(rng.random() < 0.3)
                ctx.set(dut.features.valid, offering)
                ctx.set(dut.features.payload, int(row[sent]) if offering else 0)
                ctx.set(dut.outputs.ready, taking)
                accepted = offering and ctx.get(dut.features.ready)
                given = taking and ctx.get(dut.outputs.valid)
                value = ctx.get(dut.outputs.payload)
                await ctx.tick()
                sent += int(accepted)
                if given:
                    values.append(value)
            got.append(values)

    simulator = Simulator(dut)
    simulator.add_clock(1e-6)
    simulator.add_testbench(host)
    simulator.run()
    assert np.array_equal(np.array(got, dtype=np.int32), model.forward(rows))
