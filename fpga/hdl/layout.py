"""The shape of an accelerator: everything its logic depends on, derived from the architecture and P alone.

Two models with the same `IntegerModel.architecture` and parallelism get the same `Layout`, hence the same logic
and the same memory geometry; only memory contents differ between them, which is what makes icebram patching
possible.

Dataflow. Output neurons of a layer are processed in groups of P (lane p of group g computes neuron g*P + p). For
every (layer, group, input) step the weight memory yields one word holding the P lanes' int8 weights, so the
weight address is a single counter running over the whole network. The requantizer reads one word per output
neuron from the `scale` memory (the layer's multiplier) and one from the `offset` memory (the neuron's folded
bias and the layer's shift); both are read in neuron order, again with plain counters.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgewise.fpga.errors import UnsupportedModelError

PRODUCT_MAX = 128 * 128  # the largest |int8 x int8| product
MULTIPLIER_BITS = 15  # IntegerModel multipliers are in [0, 2**15)
SCALE_WIDTH = 16  # the scale memory's word: the multiplier, one spare bit that the datapath still multiplies by
SHIFT_BITS = 6
MAX_SHIFT = 48  # shifts above this give 0 for every int32 accumulator (|acc * M| < 2**46); see images.py
EBR_WORDS = 256  # icebram matches memories 256 words at a time
REQUANT_CYCLES = 2  # cycles the requantizer spends on one output neuron


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def signed_width(low: int, high: int) -> int:
    """Bits of the smallest two's complement type holding [low, high]."""
    bits = 1
    while not (-(1 << (bits - 1)) <= low and high <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


@dataclass(frozen=True, slots=True)
class LayerLayout:
    index: int
    in_features: int
    out_features: int
    relu: bool
    last: bool
    groups: int  # ceil(out_features / P)
    last_lanes: int  # valid lanes in the final group
    weight_base: int  # first weight word of the layer
    neuron_base: int  # first scale/offset word of the layer

    @property
    def source_bank(self) -> int:
        """The activation bank the layer reads; it writes the other one (or the output FIFO when last)."""
        return self.index % 2

    @property
    def steps(self) -> int:
        return self.groups * self.in_features


@dataclass(frozen=True, slots=True)
class Layout:
    parallelism: int
    layers: tuple[LayerLayout, ...]
    weight_depth: int
    neuron_depth: int
    bank_size: int  # activation words per bank (a power of two)
    sum_width: int  # a lane's group sum: in_features int8 x int8 products, exactly
    offset_width: int  # the folded bias K, see images.py
    value_width: int  # v * M + K, exactly

    @classmethod
    def of(cls, architecture: tuple[tuple[int, int, bool], ...], parallelism: int) -> Layout:
        if parallelism < 1:
            raise UnsupportedModelError(f"parallelism must be at least 1, not {parallelism}")
        if not architecture:
            raise UnsupportedModelError("the model has no layers")
        layers: list[LayerLayout] = []
        weight_base = neuron_base = 0
        previous_out: int | None = None
        for index, (out_features, in_features, relu) in enumerate(architecture):
            if out_features < 1 or in_features < 1:
                raise UnsupportedModelError(f"layer {index} has shape ({out_features}, {in_features})")
            if previous_out is not None and previous_out != in_features:
                raise UnsupportedModelError(
                    f"layer {index} takes {in_features} inputs but the previous layer gives {previous_out}"
                )
            groups = -(-out_features // parallelism)
            layer = LayerLayout(
                index=index,
                in_features=in_features,
                out_features=out_features,
                relu=relu,
                last=index == len(architecture) - 1,
                groups=groups,
                last_lanes=out_features - (groups - 1) * parallelism,
                weight_base=weight_base,
                neuron_base=neuron_base,
            )
            layers.append(layer)
            weight_base += layer.steps
            neuron_base += out_features
            previous_out = out_features
        widest_in = max(layer.in_features for layer in layers)
        sum_bound = widest_in * PRODUCT_MAX
        sum_width = signed_width(-sum_bound, sum_bound)
        # K = bias * M + 2**(shift-1) for requantizing layers, K = bias for the last one; shift <= MAX_SHIFT.
        k_low = -(2**31) * (2**MULTIPLIER_BITS - 1)
        k_high = (2**31 - 1) * (2**MULTIPLIER_BITS - 1) + 2 ** (MAX_SHIFT - 1)
        offset_width = signed_width(k_low, k_high)
        offset_width += (-(offset_width + SHIFT_BITS)) % 4  # icebram takes hex words: whole nibbles
        product_bound = sum_bound * (2**SCALE_WIDTH - 1)
        value_width = signed_width(-product_bound + k_low, product_bound + k_high)
        banked = [architecture[0][1], *(layer.out_features for layer in layers if not layer.last)]
        bank_size = 1 << max(0, (max(banked) - 1).bit_length())
        return cls(
            parallelism=parallelism,
            layers=tuple(layers),
            weight_depth=_round_up(max(weight_base, 1), EBR_WORDS),
            neuron_depth=_round_up(neuron_base, EBR_WORDS),
            bank_size=bank_size,
            sum_width=sum_width,
            offset_width=offset_width,
            value_width=max(value_width, offset_width + 1),
        )

    @property
    def in_features(self) -> int:
        return self.layers[0].in_features

    @property
    def out_features(self) -> int:
        return self.layers[-1].out_features

    @property
    def weight_steps(self) -> int:
        return sum(layer.steps for layer in self.layers)

    @property
    def neurons(self) -> int:
        return sum(layer.out_features for layer in self.layers)

    @property
    def weight_width(self) -> int:
        return 8 * self.parallelism

    @property
    def offset_word_width(self) -> int:
        return self.offset_width + SHIFT_BITS

    @property
    def architecture(self) -> tuple[tuple[int, int, bool], ...]:
        return tuple((layer.out_features, layer.in_features, layer.relu) for layer in self.layers)
