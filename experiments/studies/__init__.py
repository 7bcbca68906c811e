"""Studies: fair Optuna comparisons of many balancers (same budget, reruns over seeds, a table).

``config`` (the study YAML), ``plan`` (what a study will run, fixed before it starts),
``storage`` and ``journal`` (where trials live and how a study resumes), ``worker`` (one trial:
one training run), ``driver`` (``run_study``: workers, budget, reruns), ``results`` (tables from
a storage), ``extract`` (fixed weights from runs' logged weights).
"""
