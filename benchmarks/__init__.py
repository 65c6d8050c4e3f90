"""Benchmarks, run by `make benchmark` and never by the test suite."""
