"""Analysis of finished runs: task-gradient cosine similarity, weight trajectories, Δm% and
mean-rank tables, comparison plots, the ``report`` and the ``claims`` commands.

Reads run directories and study storages; never trains to read a result (``claims`` launches
the runs it needs through experiments' public functions, then reads their directories).
"""
