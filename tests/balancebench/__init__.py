"""Tests of `balancebench` (mirrors the package)."""
