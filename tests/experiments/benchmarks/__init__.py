"""Tests of `experiments.benchmarks` (mirrors the package)."""
