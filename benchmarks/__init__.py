"""Benchmarks: performance targets, measured side by side against the simulator."""
