"""One module per command group: ``runs`` (list, train, stl, toy), ``studies`` (study, results,
extract-weights, demo; ``demo`` composes a study and its report), ``cost`` (bench) and
``analysis`` (report, claims)."""
