"""Tests of GroupedMeanNNConv, the faster evaluation of PyG's NNConv(aggr="mean") inside the QM9 trunk."""

from __future__ import annotations

import pytest
import torch

from experiments.benchmarks import qm9
from experiments.benchmarks.qm9 import QM9Benchmark


@pytest.fixture(scope="module")
def bench() -> QM9Benchmark:
    return QM9Benchmark()


def _random_graph_batch(gen: torch.Generator, sizes: list[int], edges_per_graph: int, edge_dim: int, d_in: int):
    """Graphs of the given sizes (0 = a graph without nodes), nodes in shuffled order, random edges
    inside each graph with duplicates and self loops; some nodes without incoming edges."""
    graph_of = torch.cat([torch.full((n,), g, dtype=torch.long) for g, n in enumerate(sizes)])
    shuffle = torch.randperm(len(graph_of), generator=gen)
    batch = graph_of[shuffle]  # node k belongs to graph batch[k]; the batch vector is not sorted
    edges = []
    for g, n in enumerate(sizes):
        nodes = (batch == g).nonzero().flatten()
        if n == 0:
            continue
        src = nodes[torch.randint(n, (edges_per_graph,), generator=gen)]
        dst = nodes[torch.randint(max(n - 1, 1), (edges_per_graph,), generator=gen)]  # the last node: no in-edges
        edges.append(torch.stack([src, dst]))
    edge_index = torch.cat(edges, dim=1)
    edge_attr = torch.randn(edge_index.size(1), edge_dim, generator=gen)
    x = torch.randn(len(batch), d_in, generator=gen)
    return x, edge_index, edge_attr, batch


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    """Equal to ``tol`` relative to the larger of 1 and the reference's magnitude."""
    return float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


@pytest.mark.parametrize(("root_weight", "bias", "last_bias"), [(True, True, True), (False, False, False)])
def test_grouped_mean_nnconv_equals_pyg_nnconv(root_weight: bool, bias: bool, last_bias: bool) -> None:
    """GroupedMeanNNConv == PyG NNConv(aggr="mean") with the SAME parameters: outputs and the
    gradients of x, edge_attr and every parameter, on random multi-graph batches (d_in != d_out)."""
    from torch_geometric.nn import NNConv

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    d_in, d_out, edge_dim, hidden = 6, 4, 5, 16
    edge_net = torch.nn.Sequential(torch.nn.Linear(edge_dim, hidden), torch.nn.ReLU(),
                                   torch.nn.Linear(hidden, d_in * d_out, bias=last_bias))
    conv = NNConv(d_in, d_out, nn=edge_net, aggr="mean", root_weight=root_weight, bias=bias)
    if bias:
        torch.nn.init.normal_(conv.bias)  # PyG initialises it to zero
    sizes = [5, 3, 5, 1, 0, 7, 3, 5, 2]
    x, edge_index, edge_attr, batch = _random_graph_batch(gen, sizes, 12, edge_dim, d_in)
    params = dict(conv.named_parameters())

    def run(fast: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        conv.zero_grad(set_to_none=True)
        xs, ea = x.clone().requires_grad_(), edge_attr.clone().requires_grad_()
        if fast:
            out = qm9.GroupedMeanNNConv(conv, edge_index, ea, batch, len(sizes))(xs)
        else:
            out = conv(xs, edge_index, ea)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        (out * weights).sum().backward()
        grads = {"x": xs.grad, "edge_attr": ea.grad, **{k: p.grad for k, p in params.items()}}
        return out.detach(), grads

    fast_out, fast_grads = run(True)
    ref_out, ref_grads = run(False)
    assert fast_out.shape == (len(batch), d_out)
    assert _close(fast_out, ref_out)
    assert set(fast_grads) == set(ref_grads) and len(params) == 2 + last_bias + 1 + root_weight + bias
    for name, g in ref_grads.items():
        assert fast_grads[name] is not None and _close(fast_grads[name], g), name
    # nodes without incoming edges get only root + bias, as PyG's mean (0 for an empty neighbourhood)
    lonely = torch.ones(len(batch), dtype=torch.bool)
    lonely[edge_index[1]] = False
    assert lonely.any()


def test_grouped_mean_nnconv_rejects_what_it_cannot_compute() -> None:
    from torch_geometric.nn import NNConv

    edge_net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 4))
    x, batch = torch.randn(4, 2), torch.tensor([0, 0, 1, 1])
    across = torch.tensor([[0, 2], [1, 1]])  # 2 -> 1 joins graph 1 to graph 0
    with pytest.raises(ValueError, match="two different graphs"):
        qm9.GroupedMeanNNConv(NNConv(2, 2, nn=edge_net, aggr="mean"), across, torch.randn(2, 2), batch, 2)
    with pytest.raises(ValueError, match="mean"):
        qm9.GroupedMeanNNConv(NNConv(2, 2, nn=edge_net, aggr="add"), across[:, :1], torch.randn(1, 2), batch, 2)


def test_fast_trunk_equals_pyg_trunk_on_qm9(bench: QM9Benchmark) -> None:
    """The default model (dim 64) with GroupedMeanNNConv == with PyG's NNConv: outputs and every gradient."""
    torch.manual_seed(0)
    model = bench.build_model()
    batch = bench.collate()(bench.splits["train"][:12].tolist())

    def run(fast: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.trunk.fast_conv = fast
        model.zero_grad(set_to_none=True)
        outputs = model(batch)
        bench.losses(outputs, batch).sum().backward()
        return torch.cat(outputs, dim=1).detach(), {k: p.grad.clone() for k, p in model.named_parameters()}

    fast_out, fast_grads = run(True)
    ref_out, ref_grads = run(False)
    assert _close(fast_out, ref_out)
    for name, g in ref_grads.items():
        assert _close(fast_grads[name], g), name


def test_trunk_state_dict_names_and_functional_call(bench: QM9Benchmark) -> None:
    """Parameters keep PyG's NNConv names (old checkpoints load); the fast path reads the parameters
    at call time, so torch.func.functional_call (the balancers' loss closures) sees swapped ones."""
    torch.manual_seed(0)
    model = bench.build_model(dim=16)
    assert sorted(k for k in model.state_dict() if k.startswith("trunk.conv.")) == [
        "trunk.conv.bias", "trunk.conv.lin.weight", "trunk.conv.nn.0.bias", "trunk.conv.nn.0.weight",
        "trunk.conv.nn.2.bias", "trunk.conv.nn.2.weight"]
    batch = bench.collate()(bench.splits["train"][:5].tolist())
    other = bench.build_model(dim=16)
    swapped = dict(other.named_parameters())
    with torch.no_grad():
        via_call = torch.func.functional_call(model, swapped, (batch,))
        expected = other(batch)
        model.load_state_dict(other.state_dict())
        loaded = model(batch)
    assert all(torch.equal(a, b) for a, b in zip(via_call, expected))
    assert all(torch.equal(a, b) for a, b in zip(loaded, expected))
