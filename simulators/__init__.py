"""Simulated device fleets and network faults for tests and benchmarks (see DESIGN.md)."""
