"""``python -m balancebench``: the same as the ``balancebench`` console script."""

from balancebench.main import main

raise SystemExit(main())
