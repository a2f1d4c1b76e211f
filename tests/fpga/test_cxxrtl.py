"""The design as CXXRTL C++, compiled by the system C++ compiler into the virtual FPGA (real Yosys, real g++).

A small stream design of the Accelerator's port contract (`tests/fpga/stream_design.py`) is checked against
its arithmetic and, cycle for cycle, against Amaranth's own simulator; then the Accelerator itself against the
integer model it was built from.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from edgewise.fpga.cxxrtl import CxxrtlSource, write_cxxrtl
from edgewise.fpga.errors import FpgaError
from edgewise.fpga.hdl import Accelerator
from edgewise.fpga.toolchain import Toolchain
from edgewise.runtime.scoring.backends.fpga.virtual import CACHE_ENV, VirtualFpga, compile_design
from edgewise.runtime.scoring.errors import InferenceFailedError, ModelLoadError

from tests.fpga.hw_models import random_inputs, random_integer_model
from tests.fpga.stream_design import WeightedSums, cycles_per_vector, weighted_sums

N_IN, N_OUT = 6, 4


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh compile cache for this module, also for anything that reads the environment."""
    folder = tmp_path_factory.mktemp("virtual-fpga-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(folder))
        yield folder


@pytest.fixture(scope="module")
def source(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory) -> CxxrtlSource:
    return write_cxxrtl(WeightedSums(N_IN, N_OUT), toolchain=toolchain, out_dir=tmp_path_factory.mktemp("design"))


@pytest.fixture(scope="module")
def fpga(source: CxxrtlSource, cache: Path) -> VirtualFpga:
    return VirtualFpga.build(source.source, source.include_dir, in_features=N_IN, out_features=N_OUT)


def vectors(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(count, N_IN), dtype=np.int8)
    if count >= 2:
        x[0], x[1] = -128, 127  # the extremes, for sign extension and overflow
    return x


def amaranth_run(design: wiring.Component, x: np.ndarray, n_out: int) -> list[tuple[list[int], int]]:
    """The same stream protocol as the driver, in Amaranth's simulator: outputs and cycles per vector."""
    results: list[tuple[list[int], int]] = []

    async def testbench(ctx):  # type: ignore[no-untyped-def]
        ctx.set(design.outputs.ready, 1)
        for row in x:
            taken, out, cycle, first = 0, [], 0, 0
            while len(out) < n_out:
                offering = taken < len(row)
                ctx.set(design.features.valid, offering)
                ctx.set(design.features.payload, int(row[taken]) if offering else 0)
                feature_taken = offering and ctx.get(design.features.ready)
                if ctx.get(design.outputs.valid):
                    out.append(ctx.get(design.outputs.payload))
                await ctx.tick()
                if feature_taken and taken == 0:
                    first = cycle
                cycle += 1
                taken += int(feature_taken)
            ctx.set(design.features.valid, 0)
            results.append((out, cycle - first))

    sim = Simulator(design)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return results


def test_source_and_runtime_headers_are_written(source: CxxrtlSource) -> None:
    text = source.source.read_text()
    for port in ("features__payload", "features__ready", "outputs__payload", "outputs__valid", "clk", "rst"):
        assert f'"{port}"' in text  # a debug item the driver finds the port by
    assert (source.include_dir / "cxxrtl" / "cxxrtl.h").is_file()
    assert (source.include_dir / "cxxrtl" / "capi" / "cxxrtl_capi.cc").is_file()
    assert source.top == "top"
    assert not list(source.source.parent.glob("*.il"))  # the netlist is an intermediate


def test_outputs_equal_the_designs_arithmetic(fpga: VirtualFpga) -> None:
    for row in vectors(40):
        out, cycles = fpga.run(row)
        assert out.dtype == np.int32
        np.testing.assert_array_equal(out, weighted_sums(row, N_OUT))
        assert cycles == cycles_per_vector(N_IN, N_OUT)


def test_cycles_and_outputs_match_amaranths_simulator(source: CxxrtlSource, cache: Path) -> None:
    x = vectors(6, seed=1)
    expected = amaranth_run(WeightedSums(N_IN, N_OUT), x, N_OUT)
    fpga = VirtualFpga.build(source.source, source.include_dir, in_features=N_IN, out_features=N_OUT)
    for row, (outputs, cycles) in zip(x, expected, strict=True):
        out, taken = fpga.run(row)
        assert out.tolist() == outputs
        assert taken == cycles


def test_a_design_that_cxxrtl_cannot_settle_in_one_pass_is_clocked_in_two(
    source: CxxrtlSource, cache: Path, tmp_path: Path
) -> None:
    """The driver's fallback for designs with feedback, which report that one evaluation did not converge."""
    text = source.source.read_text()
    assert "bool converged = true;" in text  # this design settles in one pass; make it say otherwise
    slow = tmp_path / "design.cc"
    slow.write_text(text.replace("bool converged = true;", "bool converged = false;"))
    fast = VirtualFpga.build(source.source, source.include_dir, in_features=N_IN, out_features=N_OUT)
    careful = VirtualFpga.build(slow, source.include_dir, in_features=N_IN, out_features=N_OUT)
    for row in vectors(5, seed=6):
        assert careful.run(row)[0].tolist() == fast.run(row)[0].tolist() == weighted_sums(row, N_OUT).tolist()
        assert careful.run(row)[1] == fast.run(row)[1] == cycles_per_vector(N_IN, N_OUT)


def test_step_and_reset_keep_the_design_usable(fpga: VirtualFpga) -> None:
    row = vectors(1, seed=2)[0]
    _, first = fpga.run(row)
    fpga.step(1000)
    fpga.reset()
    out, again = fpga.run(row)
    np.testing.assert_array_equal(out, weighted_sums(row, N_OUT))
    assert again == first  # reset brings back the stall pattern's phase


def test_a_design_that_does_not_answer_hits_the_cycle_limit_and_is_reset(source: CxxrtlSource, cache: Path) -> None:
    fpga = VirtualFpga.build(source.source, source.include_dir, in_features=N_IN, out_features=N_OUT, max_cycles=5)
    row = vectors(1, seed=3)[0]
    with pytest.raises(InferenceFailedError, match="within 5 cycles"):
        fpga.run(row)
    fpga.max_cycles = 1000
    np.testing.assert_array_equal(fpga.run(row)[0], weighted_sums(row, N_OUT))


def test_the_compiled_design_is_cached_by_its_sources(
    source: CxxrtlSource, cache: Path, toolchain: Toolchain, tmp_path: Path
) -> None:
    first = compile_design(source.source, source.include_dir)
    assert first.parent == cache
    modified = first.stat().st_mtime_ns
    assert compile_design(source.source, source.include_dir) == first
    assert first.stat().st_mtime_ns == modified
    other = write_cxxrtl(WeightedSums(N_IN, N_OUT + 1), toolchain=toolchain, out_dir=tmp_path / "other")
    second = compile_design(other.source, other.include_dir)
    assert second != first
    fpga = VirtualFpga(second, in_features=N_IN, out_features=N_OUT + 1)
    row = vectors(1, seed=4)[0]
    np.testing.assert_array_equal(fpga.run(row)[0], weighted_sums(row, N_OUT + 1))


def test_concurrent_compiles_of_one_design_share_one_library(toolchain: Toolchain, tmp_path: Path) -> None:
    design = write_cxxrtl(WeightedSums(3, 2), toolchain=toolchain, out_dir=tmp_path / "design")
    folder = tmp_path / "cache"
    found: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            found.append(compile_design(design.source, design.include_dir, cache=folder))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(found)) == 1
    assert sorted(p.suffix for p in folder.iterdir()) == [".lock", ".so"]  # no half-written library is left
    row = np.array([5, -7, 100], dtype=np.int8)
    out, _ = VirtualFpga(found[0], in_features=3, out_features=2).run(row)
    np.testing.assert_array_equal(out, weighted_sums(row, 2))


def test_an_unwritable_cache_falls_back_to_a_temporary_folder(
    source: CxxrtlSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    library = compile_design(source.source, source.include_dir)
    assert not library.is_relative_to(blocker)
    assert library.is_file()


def test_a_missing_compiler_is_a_load_error_that_says_what_to_install(
    source: CxxrtlSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    with pytest.raises(ModelLoadError, match=r"needs a C\+\+ compiler.*apt-get install g\+\+"):
        compile_design(source.source, source.include_dir)


def test_a_compile_error_carries_the_compilers_message(source: CxxrtlSource, cache: Path, tmp_path: Path) -> None:
    broken = tmp_path / "design.cc"
    broken.write_text(source.source.read_text().replace("struct p_top", "struct p_top {;", 1))
    with pytest.raises(ModelLoadError, match=r"the C\+\+ compiler failed"):
        compile_design(broken, source.include_dir)


class _OtherPorts(wiring.Component):
    def __init__(self) -> None:
        super().__init__({"data": In(8), "result": Out(8)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        held = Signal(8)
        m.d.sync += held.eq(self.data)
        m.d.comb += self.result.eq(held)
        return m


def test_a_design_without_the_stream_ports_is_refused(toolchain: Toolchain, tmp_path: Path) -> None:
    with pytest.raises(FpgaError, match=r"features__payload.*unexpected: data, result"):
        write_cxxrtl(_OtherPorts(), toolchain=toolchain, out_dir=tmp_path)


# -- the Accelerator -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sizes", "parallelism"), [((16, 32, 32, 5), 8), ((6, 3), 1)])
def test_the_accelerator_on_the_virtual_fpga_equals_the_integer_model(
    sizes: tuple[int, ...], parallelism: int, toolchain: Toolchain, cache: Path, tmp_path: Path
) -> None:
    model = random_integer_model(sizes, seed=len(sizes))
    source = write_cxxrtl(Accelerator(model, parallelism=parallelism), toolchain=toolchain, out_dir=tmp_path)
    fpga = VirtualFpga.build(
        source.source, source.include_dir, in_features=model.in_features, out_features=model.out_features
    )
    x = random_inputs(model.in_features, 60, seed=5)
    x[0], x[1] = -128, 127
    expected = model.forward(x)
    runs = [fpga.run(row) for row in x]
    np.testing.assert_array_equal(np.stack([out for out, _ in runs]), expected)
    # Cycle for cycle what Amaranth's simulator gives for the same design and the same protocol.
    simulated = amaranth_run(Accelerator(model, parallelism=parallelism), x[:2], model.out_features)
    assert [cycles for _, cycles in runs[:2]] == [cycles for _, cycles in simulated]
    assert [out for out, _ in simulated] == expected[:2].tolist()
