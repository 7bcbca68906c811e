"""Tests of `experiments.training` (mirrors the package)."""
