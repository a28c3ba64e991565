"""Estimates before a run: the forms, the device and throughput data, and priced results."""
