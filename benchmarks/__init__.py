"""Benchmarks run on demand (``python -m benchmarks``); they print figures, never assert timings."""
