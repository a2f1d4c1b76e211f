"""The block RAM contents of an accelerator: a model's numbers laid out as the hardware reads them.

Every model-specific number lives in one of three memories, so that models of one architecture differ only here:

    weights  (8*P bits)  word s = the P lanes' int8 weights of step s (layer, group, input), lane p in bits 8p..8p+7
    scale    (16 bits)   word n = the multiplier M of neuron n's layer (1 for the last layer)
    offset   (K + 6 bits) word n = K | shift << K_bits for neuron n

The requantizer computes y = (v*M + K) >> shift from the group sum v of int8 x int8 products, with K folded from
the bias on the host: K = bias*M + 2**(shift-1) for a requantizing layer, which is exactly the reference's
(acc*M + 2**(shift-1)) >> shift since acc = v + bias; K = bias and shift = 0 for the last layer. A shift above 48
is stored as 48: for any int32 accumulator |acc*M| < 2**46, so both give 0. This keeps the multiplier as narrow as
the architecture allows (v is bounded by in_features * 128 * 128) while the bias keeps its full int32 range.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from edgewise.fpga.hdl.layout import EBR_WORDS, MAX_SHIFT, SCALE_WIDTH, Layout
from edgewise.fpga.ir import IntegerModel

MEMORY_NAMES = ("weights", "scale", "offset")


@dataclass(frozen=True, slots=True)
class MemoryImage:
    """One memory's words as unsigned integers of `width` bits."""

    width: int
    depth: int
    words: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.words) != self.depth:
            raise ValueError(f"a memory of depth {self.depth} got {len(self.words)} words")
        limit = 1 << self.width
        if any(not 0 <= word < limit for word in self.words):
            raise ValueError(f"a word does not fit in {self.width} bits")

    def to_hex(self) -> str:
        """The image as icebram and $readmemh read it: one word a line, `width / 4` hex digits."""
        digits = -(-self.width // 4)
        return "".join(f"{word:0{digits}x}\n" for word in self.words)

    @classmethod
    def from_hex(cls, text: str, *, width: int) -> MemoryImage:
        words = tuple(int(line, 16) for line in text.split())
        return cls(width=width, depth=len(words), words=words)


def memory_shapes(layout: Layout) -> dict[str, tuple[int, int]]:
    """(width, depth) of each model memory."""
    return {
        "weights": (layout.weight_width, layout.weight_depth),
        "scale": (SCALE_WIDTH, layout.neuron_depth),
        "offset": (layout.offset_word_width, layout.neuron_depth),
    }


def memory_images(model: IntegerModel, parallelism: int) -> dict[str, MemoryImage]:
    """The contents of the weights, scale and offset memories for `model` on a P = `parallelism` design."""
    layout = Layout.of(model.architecture, parallelism)
    shapes = memory_shapes(layout)
    weights = [0] * layout.weight_depth
    scale = [0] * layout.neuron_depth
    offset = [0] * layout.neuron_depth
    k_mask = (1 << layout.offset_width) - 1
    for plan, layer in zip(layout.layers, model.layers, strict=True):
        raw = layer.weights.astype("int64") & 0xFF
        for group in range(plan.groups):
            lanes = min(parallelism, plan.out_features - group * parallelism)
            for column in range(plan.in_features):
                word = 0
                for lane in range(lanes):
                    word |= int(raw[group * parallelism + lane, column]) << (8 * lane)
                weights[plan.weight_base + group * plan.in_features + column] = word
        if layer.requantize:
            multiplier, shift = layer.multiplier, min(layer.shift, MAX_SHIFT)
            rounding = 1 << (shift - 1)
        else:
            multiplier, shift, rounding = 1, 0, 0
        for neuron in range(plan.out_features):
            k = int(layer.bias[neuron]) * multiplier + rounding
            scale[plan.neuron_base + neuron] = multiplier
            offset[plan.neuron_base + neuron] = (k & k_mask) | (shift << layout.offset_width)
    return {
        name: MemoryImage(width=shapes[name][0], depth=shapes[name][1], words=tuple(words))
        for name, words in (("weights", weights), ("scale", scale), ("offset", offset))
    }


def random_images(layout: Layout, *, seed: int = 0) -> dict[str, MemoryImage]:
    """Pseudo-random contents for a template bitstream.

    icebram finds a memory in a bitstream by its 256-word bit slices, so every slice of every memory must be
    unique; random words of full width make a collision practically impossible (2**-256 per pair), and the
    slices are checked anyway.
    """
    generator = random.Random(f"edgewise-template-{seed}")
    images = {}
    seen: set[tuple[int, ...]] = set()
    for name, (width, depth) in memory_shapes(layout).items():
        words = tuple(generator.getrandbits(width) for _ in range(depth))
        for start in range(0, depth, EBR_WORDS):
            chunk = words[start : start + EBR_WORDS]
            for bit in range(width):
                pattern = tuple(word >> bit & 1 for word in chunk)
                if pattern in seen:
                    raise ValueError("random template contents repeat a bit slice; choose another seed")
                seen.add(pattern)
        images[name] = MemoryImage(width=width, depth=depth, words=words)
    return images
