"""Tests of `experiments.studies` (mirrors the package)."""
