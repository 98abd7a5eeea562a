"""Shared parts of the benchmarks: loop devices, cold-cache timed runs, checks and reports.

Benchmark-only code: never imported by the flasher package or its tests.
"""
