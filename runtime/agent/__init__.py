"""The edge agent daemon: desired manifest in, modules running, reported state and telemetry out."""
