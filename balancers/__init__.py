"""balancebench's registry of multi-task loss balancers.

>>> from balancers import list_balancers, create_balancer
>>> b = create_balancer("famo", n_tasks=3, gamma=1e-3, w_lr=0.025)
"""

from balancers.base import Balancer, LossClosure
from balancers.plugins import PluginError
from balancers.registry import (BalancerInfo, available_balancers, balancer_info, balancer_origin, create_balancer,
                                list_balancers, register)

# Importing the modules registers them, in the order `balancebench list` shows them.
from balancers import uniform, fixed, si, rlw, uw, dwa, famo, marigold, mgda, imtlg, nashmtl  # noqa: E402,F401  isort: skip
# issue 16: loss-based balancers, then the O(K) references through TorchJD's weightings
from balancers import imtl_l, gls, stch, dbmtl, pcgrad, cagrad, upgrad, aligned_mtl  # noqa: E402,F401  isort: skip

__all__ = ["Balancer", "BalancerInfo", "LossClosure", "PluginError", "available_balancers", "balancer_info", "balancer_origin",
           "create_balancer", "list_balancers", "register"]
