"""Batches of complete molecular graphs, built from the store on the fly (pure torch, no PyG needed).

Edges are the COMPLETE directed graph of each molecule (every ordered atom pair ``i != j``, no self
loops, row-major: source ``i``, target ``j``), as the Nash-MTL / FAMO reference builds them (their
``Complete`` transform, then PyG's ``Distance(norm=False)``). ``edge_attr`` has 5 dims: bond-type
one-hot (single, double, triple, aromatic; all zero for non-bonded pairs) followed by the
interatomic distance in Å. Only the bond list is stored; the pairs are made here, per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor
from torch.utils.data import Dataset

from experiments.benchmarks.qm9.cache import QM9Store


@dataclass
class QM9Batch:
    """A batch of complete molecular graphs (PyG naming; ``y`` holds STANDARDISED targets)."""

    x: Tensor  # (N, 11) float
    pos: Tensor  # (N, 3)
    edge_index: Tensor  # (2, E) long, complete graph within each molecule
    edge_attr: Tensor  # (E, 5): bond one-hot (4) + distance
    batch: Tensor  # (N,) graph of each node
    y: Tensor  # (B, 11) standardised targets
    idx: Tensor  # (B,) rows of the molecules in the store
    num_graphs: int

    def to(self, device: torch.device | str, non_blocking: bool = False) -> QM9Batch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in moved.items():
            if isinstance(v, Tensor):
                moved[k] = v.to(device, non_blocking=non_blocking)
        return QM9Batch(**moved)


def _segments(counts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For segment lengths ``counts``: (segment of each element, position within it, exclusive starts)."""
    starts = torch.zeros_like(counts)
    starts[1:] = counts.cumsum(0)[:-1]
    total = int(counts.sum())
    seg = torch.repeat_interleave(torch.arange(len(counts)), counts, output_size=total)
    local = torch.arange(total) - starts[seg]
    return seg, local, starts


class QM9Collate:
    """Builds a :class:`QM9Batch` from a list of store rows (complete-graph edges made here)."""

    def __init__(self, store: QM9Store, mean: Tensor, std: Tensor) -> None:
        self.store, self.mean, self.std = store, mean, std

    def __call__(self, rows: list[int] | Tensor) -> QM9Batch:
        s = self.store
        idx = torch.as_tensor(rows, dtype=torch.long)
        n = s.n_atoms[idx]
        node_graph, node_local, node_start = _segments(n)
        atom = s.atom_ptr[idx][node_graph] + node_local
        x = s.x[atom].float()
        pos = s.pos[atom]

        # complete graph: edge l of a graph with n atoms is (i, j), i = l // (n-1), j skips i
        edge_graph, l, _ = _segments(n * (n - 1))
        ng = n[edge_graph]
        i = torch.div(l, ng - 1, rounding_mode="floor")
        jj = l - i * (ng - 1)
        j = jj + (jj >= i).long()
        src = node_start[edge_graph] + i
        dst = node_start[edge_graph] + j

        # bond type of every pair via a dense per-molecule (n x n) lookup table
        bond_graph, bond_local, _ = _segments(s.n_bonds[idx])
        bond = s.bond_ptr[idx][bond_graph] + bond_local
        ba = s.bond_atoms[bond].long()
        btype = s.bond_type[bond].long()
        _, _, dense_start = _segments(n * n)
        table = torch.zeros(int((n * n).sum()), dtype=torch.long)
        nb = n[bond_graph]
        table[dense_start[bond_graph] + ba[:, 0] * nb + ba[:, 1]] = btype
        table[dense_start[bond_graph] + ba[:, 1] * nb + ba[:, 0]] = btype
        pair_type = table[dense_start[edge_graph] + i * ng + j]
        onehot = torch.eye(5)[pair_type][:, 1:]
        dist = (pos[src] - pos[dst]).norm(dim=1, keepdim=True)

        y = ((s.y[idx] - self.mean) / self.std).float()
        return QM9Batch(
            x=x,
            pos=pos,
            edge_index=torch.stack([src, dst]),
            edge_attr=torch.cat([onehot, dist], dim=1),
            batch=node_graph,
            y=y,
            idx=idx,
            num_graphs=len(idx),
        )


class Rows(Dataset):
    """Store rows as a map-style dataset (the loaders batch row numbers; the collate builds graphs)."""

    def __init__(self, rows: Tensor) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> int:
        return int(self.rows[i])
