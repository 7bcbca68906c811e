"""Tests of `experiments.cost` (mirrors the package)."""
