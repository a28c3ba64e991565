"""Runs across processes: each rank's role, the job's totals on rank 0, and ``wattprint merge``."""
