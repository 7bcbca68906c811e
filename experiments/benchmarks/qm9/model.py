"""The QM9 model: Gilmer et al.'s MPNN (NNConv + GRU, Set2Set) and the two ways to split it into tasks.

Trunk (both head styles): Linear(11, dim) + ReLU, then 3 iterations of one shared
``NNConv(dim, dim, nn=Sequential(Linear(5, 128), ReLU, Linear(128, dim*dim)), aggr="mean")``
+ ReLU + GRU update, then ``Set2Set(dim, processing_steps=3)`` -> graph embedding (2*dim). As the
Nash-MTL / FAMO ``quantum_chemistry/models.py`` ``Net``; runs on plain PyTorch (no torch-scatter /
torch-sparse), the NNConv evaluated by :class:`~experiments.benchmarks.qm9.kernel.GroupedMeanNNConv`.

Head styles (where the tasks stop sharing, which is where balancers act):

``shared_lin1`` (the reference)
    ``lin1`` = Linear(2*dim, dim) + ReLU is SHARED (part of the trunk), then each task has one
    Linear(dim, 1). dim 64: 616,960 shared and 11 x 65 = 715 task-specific parameters.
``per_task_mlp`` (the ``rich`` variant)
    Each task has its own Linear(2*dim, dim) + ReLU + Linear(dim, 1) on the Set2Set embedding.
    dim 64: 608,704 shared and 11 x 8,321 = 91,531 task-specific parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from experiments.benchmarks.base import MultiTaskModel
from experiments.benchmarks.qm9.batching import QM9Batch
from experiments.benchmarks.qm9.features import EDGE_DIM, NODE_DIM
from experiments.benchmarks.qm9.kernel import GroupedMeanNNConv

HEAD_STYLES = ("shared_lin1", "per_task_mlp")


class MPNNTrunk(nn.Module):
    """The shared part: MPNN + Set2Set, and (``shared_lin1``) the reference's ``lin1`` + ReLU.

    ``self.conv`` is PyG's ``NNConv`` (parameters, initialisation and state-dict names as in the
    reference); the forward evaluates it with :class:`GroupedMeanNNConv` (same function, ~10x
    cheaper) unless ``fast_conv`` is set to False (PyG's own message passing, the reference).
    ``out_dim`` is dim with ``shared_lin1``, else 2*dim (the Set2Set embedding).
    """

    #: evaluate the shared NNConv with GroupedMeanNNConv (True) or with PyG's message passing (False)
    fast_conv: bool = True

    def __init__(self, dim: int = 64, steps: int = 3, edge_hidden: int = 128, shared_lin1: bool = True) -> None:
        super().__init__()
        from torch_geometric.nn import NNConv
        from torch_geometric.nn.aggr import Set2Set

        self.steps = steps
        self.lin0 = nn.Linear(NODE_DIM, dim)
        edge_net = nn.Sequential(nn.Linear(EDGE_DIM, edge_hidden), nn.ReLU(), nn.Linear(edge_hidden, dim * dim))
        self.conv = NNConv(dim, dim, nn=edge_net, aggr="mean")
        self.gru = nn.GRU(dim, dim)
        self.set2set = Set2Set(dim, processing_steps=3)
        self.lin1 = nn.Linear(2 * dim, dim) if shared_lin1 else None
        self.out_dim = dim if shared_lin1 else 2 * dim

    def forward(self, batch: QM9Batch) -> Tensor:
        out = torch.relu(self.lin0(batch.x))
        h = out.unsqueeze(0)
        if self.fast_conv:  # the edge-only work (edge network hidden layer, H blocks) once for all steps
            conv = GroupedMeanNNConv(self.conv, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs)
        else:
            def conv(x: Tensor) -> Tensor:
                return self.conv(x, batch.edge_index, batch.edge_attr)
        for _ in range(self.steps):
            m = torch.relu(conv(out))
            out, h = self.gru(m.unsqueeze(0), h)
            out = out.squeeze(0)
        graph = self.set2set(out, batch.batch, dim_size=batch.num_graphs)
        return graph if self.lin1 is None else torch.relu(self.lin1(graph))


def build_qm9_model(n_tasks: int, dim: int = 64, heads: str = "shared_lin1") -> MultiTaskModel:
    """The MPNN with ``n_tasks`` heads of the given style (see the module docstring)."""
    if heads not in HEAD_STYLES:
        raise ValueError(f"unknown QM9 head style {heads!r}; valid: {', '.join(HEAD_STYLES)}")
    shared = heads == "shared_lin1"
    trunk = MPNNTrunk(dim, shared_lin1=shared)
    if shared:
        task_heads = [nn.Linear(dim, 1) for _ in range(n_tasks)]
    else:
        task_heads = [nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, 1)) for _ in range(n_tasks)]
    model = MultiTaskModel(trunk, task_heads)
    # the message passing's scatter/index_add backward batches slowly under vmap: on the CPU the K = 11
    # per-task gradients took 9.2 s batched against 4.1 s one by one (subset 1,000, batch 64, 1 thread)
    model.batched_task_gradients = False
    return model
