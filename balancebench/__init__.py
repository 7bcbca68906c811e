"""The ``balancebench`` command line: the one layer on top of the house.

It may import everything (``analysis``, ``experiments``, ``balancers``) and nothing imports it.
``main`` parses and is the one place where errors meet the user; ``commands/`` holds one module
per command group, whose functions do the work through importable, documented functions.
"""
