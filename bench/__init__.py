"""Benchmarks: scalesweep against Ray Tune, and scalesweep's own per-trial overhead (not tests)."""
