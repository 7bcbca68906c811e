"""Cost: what each balancer costs per training step (time, peak memory, passes) as K grows.

``measure`` (counters of live bytes and passes), ``bench`` (the models, the variants and the
interleaved timing loop), ``tables`` (pivots, outputs, targets), ``autogram_probe`` (a side
measurement of TorchJD's autogram engine). The command is ``balancebench bench``.
"""
