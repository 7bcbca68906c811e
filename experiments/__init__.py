"""Experiments: everything that trains and measures, in rooms with one purpose each.

``benchmarks/`` (data, models, metrics, the registry), ``training/`` (one run: the trainer, its
log and run directory), ``studies/`` (fair Optuna studies of many runs), ``cost/`` (step time and
memory of every balancer). The shared core every room uses stays here: ``config`` (the run
config schema), ``schema`` (how configs are checked) and ``errors`` (what users see).
See docs/architecture.md.
"""
