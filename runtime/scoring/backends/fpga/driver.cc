// The virtual FPGA's driver: clocks a CXXRTL design through its two streams, with the whole clock loop in C++.
//
// Built into one shared object with the design's `design.cc` (which brings CXXRTL's C API when compiled with
// CXXRTL_INCLUDE_CAPI_IMPL). The ports are found once, by their flattened names, through the C API's debug
// items; afterwards a cycle is a few loads and stores, one evaluation of the design and two commits (two
// evaluations for a design whose nets feed back, which CXXRTL cannot settle in one).
//
// Port contract (docs/fpga.md): `clk`, `rst`, `features__{payload,valid,ready}` (signed 8-bit input stream),
// `outputs__{payload,valid,ready}` (signed 32-bit output stream). A transfer happens on a rising edge of `clk`
// at which both `valid` and `ready` are high.

#include <cxxrtl/capi/cxxrtl_capi.h>

#include <cstdint>
#include <cstdio>
#include <new>

#define EW_EXPORT extern "C" __attribute__((visibility("default")))

extern "C" cxxrtl_toplevel cxxrtl_design_create();

enum {
	EW_OK = 0,
	EW_CYCLE_LIMIT = 1,        // the design did not emit every output within the cycle limit
	EW_OUTPUT_BEFORE_INPUT = 2 // the design emitted every output before it took every input
};

struct ew_design {
	cxxrtl_handle handle;
	// Inputs are written through `next`, outputs read through `curr` (see cxxrtl_capi.h).
	uint32_t *clk, *rst, *features_payload, *features_valid, *outputs_ready;
	const uint32_t *features_ready, *outputs_payload, *outputs_valid;
	// The design settles in one evaluation (CXXRTL proved it has no feedback between its nets): a cycle is
	// then one evaluation at the rising edge, whose combinational values still belong to the cycle before it.
	bool one_pass;
};

namespace {

cxxrtl_object *find(cxxrtl_handle handle, const char *name, size_t width, bool input, char *error, size_t size) {
	cxxrtl_object *object = cxxrtl_get(handle, name);
	if (object == nullptr) {
		std::snprintf(error, size, "the design has no top-level port `%s`", name);
		return nullptr;
	}
	if (object->width != width) {
		std::snprintf(error, size, "port `%s` is %zu bits wide, the driver expects %zu", name, object->width, width);
		return nullptr;
	}
	if (input && ((object->flags & CXXRTL_INPUT) == 0 || object->next == nullptr)) {
		std::snprintf(error, size, "port `%s` is not a writable input of the design", name);
		return nullptr;
	}
	if (!input && (object->flags & CXXRTL_OUTPUT) == 0) {
		std::snprintf(error, size, "port `%s` is not an output of the design", name);
		return nullptr;
	}
	return object;
}

inline void clock_low(ew_design *d) {
	*d->clk = 0;
	cxxrtl_step(d->handle);
}

inline void clock_high(ew_design *d) {
	*d->clk = 1;
	cxxrtl_step(d->handle);
}

// One clock cycle with the inputs as they stand. Before the rising edge, `sample` sees the design's outputs for
// this cycle. With `one_pass`, the evaluation that computes the edge's next state also computes those outputs
// from the state before the edge; the commit that follows records the edge, and a second commit with the clock
// low records the falling edge without evaluating anything. Otherwise the design settles with the clock low
// first and is then clocked, as CXXRTL's `step` does it.
template <typename Sample>
inline void cycle(ew_design *d, Sample sample) {
	if (d->one_pass) {
		*d->clk = 1;
		cxxrtl_eval(d->handle);
		sample();
		cxxrtl_commit(d->handle);
		*d->clk = 0;
		cxxrtl_commit(d->handle);
	} else {
		clock_low(d);
		sample();
		clock_high(d);
	}
}

} // namespace

EW_EXPORT void ew_reset(ew_design *d) {
	cxxrtl_reset(d->handle);
	*d->features_valid = 0;
	*d->features_payload = 0;
	*d->outputs_ready = 0;
	*d->rst = 1;
	clock_low(d);
	clock_high(d);
	*d->rst = 0;
	clock_low(d);
}

// Returns NULL and a message in `error` when the design lacks a port of the contract.
EW_EXPORT ew_design *ew_create(char *error, size_t size) {
	ew_design *d = new (std::nothrow) ew_design();
	if (d == nullptr) {
		std::snprintf(error, size, "out of memory");
		return nullptr;
	}
	d->handle = cxxrtl_create(cxxrtl_design_create());
	static const char *const names[8] = {"clk", "rst", "features__payload", "features__valid", "outputs__ready",
	                                     "features__ready", "outputs__payload", "outputs__valid"};
	static const size_t widths[8] = {1, 1, 8, 1, 1, 1, 32, 1};
	cxxrtl_object *objects[8] = {};
	for (int i = 0; i < 8; i++) {
		objects[i] = find(d->handle, names[i], widths[i], /*input=*/i < 5, error, size);
		if (objects[i] == nullptr) {
			cxxrtl_destroy(d->handle);
			delete d;
			return nullptr;
		}
	}
	d->clk = objects[0]->next;
	d->rst = objects[1]->next;
	d->features_payload = objects[2]->next;
	d->features_valid = objects[3]->next;
	d->outputs_ready = objects[4]->next;
	d->features_ready = objects[5]->curr;
	d->outputs_payload = objects[6]->curr;
	d->outputs_valid = objects[7]->curr;
	d->one_pass = false;
	ew_reset(d);
	d->one_pass = cxxrtl_eval(d->handle) != 0; // the clock is low: this only settles the combinational nets
	cxxrtl_commit(d->handle);
	return d;
}

EW_EXPORT void ew_destroy(ew_design *d) {
	if (d == nullptr)
		return;
	cxxrtl_destroy(d->handle);
	delete d;
}

// Streams `n_in` features in and `n_out` outputs out, with `outputs__ready` held high. `*cycles` counts the
// cycles from the one that took the first feature to the one that took the last output, both included (on
// failure: the cycles run). At most `max_cycles` cycles are run.
EW_EXPORT int ew_run(ew_design *d, const int8_t *in, int32_t n_in, int32_t *out, int32_t n_out, uint64_t *cycles,
                     uint64_t max_cycles) {
	int32_t taken = 0, emitted = 0;
	uint64_t count = 0, first = 0;
	*d->outputs_ready = 1;
	while (emitted < n_out) {
		if (count >= max_cycles) {
			*cycles = count;
			*d->features_valid = 0;
			return EW_CYCLE_LIMIT;
		}
		const bool offering = taken < n_in;
		*d->features_valid = offering ? 1 : 0;
		*d->features_payload = offering ? static_cast<uint8_t>(in[taken]) : 0;
		bool feature_taken = false, output_taken = false;
		cycle(d, [&] {
			feature_taken = offering && (*d->features_ready & 1u);
			output_taken = (*d->outputs_valid & 1u) != 0;
			if (output_taken)
				out[emitted] = static_cast<int32_t>(d->outputs_payload[0]);
		});
		if (feature_taken && taken == 0)
			first = count;
		count++;
		taken += feature_taken;
		emitted += output_taken;
	}
	*d->features_valid = 0;
	*cycles = count - first;
	return taken == n_in ? EW_OK : EW_OUTPUT_BEFORE_INPUT;
}

// Clocks `n` cycles with the inputs as they stand (idle streams after a run or a reset): raw simulation speed.
EW_EXPORT void ew_step(ew_design *d, uint64_t n) {
	for (uint64_t i = 0; i < n; i++)
		cycle(d, [] {});
}
