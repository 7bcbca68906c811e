"""``balancers._functional_optim.adam_step_`` (FAMO's and MARIGOLD's fast Adam step on K logits) is
bit-identical to ``torch.optim.Adam.step`` and leaves the same optimizer state behind."""

from __future__ import annotations

import pytest
import torch

from balancers._functional_optim import adam_step_


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(
    "kwargs",
    [{"lr": 0.025, "weight_decay": 1e-3}, {"lr": 1e-4}, {"lr": 0.1, "betas": (0.5, 0.9), "eps": 1e-6},
     {"lr": 0.01, "amsgrad": True}, {"lr": 0.01, "maximize": True}],
    ids=["famo", "marigold", "betas", "amsgrad-fallback", "maximize-fallback"],
)
def test_adam_step_is_torch_adam(kwargs: dict, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    ours = [torch.nn.Parameter(torch.zeros(5, dtype=dtype)), torch.nn.Parameter(torch.ones(5, dtype=dtype))]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt_ours, opt_ref = torch.optim.Adam(ours, **kwargs), torch.optim.Adam(ref, **kwargs)
    for step in range(40):
        grads = [torch.randn(5, generator=gen, dtype=dtype) * 10.0 ** (step % 5 - 2) for _ in ours]
        use = [0, 1] if step % 3 else [1]  # sometimes a parameter without a gradient (skipped)
        adam_step_(opt_ours, [ours[i] for i in use], [grads[i] for i in use])
        for i, p in enumerate(ref):
            p.grad = grads[i] if i in use else None
        opt_ref.step()
        for a, b in zip(ours, ref):
            assert torch.equal(a, b), f"step {step}: {a.tolist()} != {b.tolist()}"
        assert all(p.grad is None for p in ours)
    state_ours, state_ref = opt_ours.state_dict(), opt_ref.state_dict()
    assert state_ours["param_groups"] == state_ref["param_groups"]
    for i in state_ref["state"]:
        for key, value in state_ref["state"][i].items():
            other = state_ours["state"][i][key]
            assert other.dtype == value.dtype and other.device == value.device and torch.equal(other, value), key


def test_adam_step_rejects_other_optimizers() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(TypeError, match="Adam"):
        adam_step_(torch.optim.AdamW([p]), [p], [torch.ones(2)])
