"""ONNX to Amaranth HDL, simulation and bitstreams (see DESIGN.md)."""
