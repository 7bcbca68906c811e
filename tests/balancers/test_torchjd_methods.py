"""The O(K) references computed through TorchJD's weightings (PCGrad, CAGrad, UPGrad, Aligned-MTL)
against hand-derived values and the authors' update rules, and the project's own MGDA, IMTL-G and
Nash-MTL cross-checked against TorchJD's (torchjd 0.18.0).

Every weighting maps the Gramian ``M = G Gᵀ`` to weights ``w``; the update is ``Gᵀ w``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch import Tensor

from balancers import create_balancer
from balancers.imtlg import imtlg_weights
from balancers.mgda import min_norm_weights
from balancers.nashmtl import nash_weights

F64 = torch.float64
METHODS = ("pcgrad", "cagrad", "upgrad", "aligned_mtl")


def weigh(name: str, grads: Tensor, **hparams) -> Tensor:
    b = create_balancer(name, grads.shape[0], **hparams)
    return b.solve(grads.to(F64), torch.ones(grads.shape[0], dtype=F64))


def random_grads(k: int, p: int = 12, seed: int = 0, shift: float = 0.2) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    scales = torch.rand(k, 1, generator=gen, dtype=F64) * 3 + 0.1
    return (torch.randn(k, p, generator=gen, dtype=F64) + shift) * scales


CONFLICT_2 = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=F64)  # g1·g2 = -1
ORTHO_3 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]], dtype=F64)


# --------------------------------------------------------------------- hand-derived values
def test_two_conflicting_gradients() -> None:
    # PCGrad: g1^PC = g1 - (g1·g2/|g2|²) g2 = g1 + g2/2; g2^PC = g2 + g1; mean = g1 + 3/4 g2
    torch.testing.assert_close(weigh("pcgrad", CONFLICT_2), torch.tensor([1.0, 0.75], dtype=F64))
    # UPGrad: the dual cone projections are the same half-space projections here (both stay in the
    # cone), so the same weights, up to TorchJD's 1e-4 ridge on the trace-normalised Gramian
    torch.testing.assert_close(weigh("upgrad", CONFLICT_2), torch.tensor([1.0, 0.75], dtype=F64), rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", METHODS)
def test_orthogonal_equal_norm_gradients_give_uniform_loss(name: str) -> None:
    """No conflict and equal norms: every method reduces to the mean (CAGrad up to its own factor)."""
    g = torch.eye(3, dtype=F64) * 2.0
    w = weigh(name, g)
    expected = 1 / 3
    if name == "cagrad":  # w* = 1/3 by symmetry: a = (1/3 + (c|g0|/|g0|) / 3) / (1 + c²)
        expected = (1 + 0.4) / 3 / (1 + 0.4**2)
    torch.testing.assert_close(w, torch.full((3,), expected, dtype=F64), rtol=0, atol=2e-4)


def test_orthogonal_gradients_of_different_norms() -> None:
    n = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    # PCGrad, UPGrad: nothing conflicts, nothing is projected: the mean
    torch.testing.assert_close(weigh("pcgrad", ORTHO_3), torch.full((3,), 1 / 3, dtype=F64))
    torch.testing.assert_close(weigh("upgrad", ORTHO_3), torch.full((3,), 1 / 3, dtype=F64), rtol=0, atol=1e-3)
    # Aligned-MTL: M = diag(n²), B = n_min diag(1/n), w = B 1/K: every task moves by n_min / K
    torch.testing.assert_close(weigh("aligned_mtl", ORTHO_3), (1 / n) / 3)


def test_cagrad_with_c_zero_is_the_mean() -> None:
    torch.testing.assert_close(weigh("cagrad", random_grads(4), c=0.0), torch.full((4,), 0.25, dtype=F64),
                               rtol=0, atol=1e-9)


# ---------------------------------------------------------------------- authors' rules
def authors_pcgrad(grads: Tensor, orders: list[list[int]]) -> Tensor:
    """Yu et al.'s Alg. 1 on explicit vectors: task i projected, in ``orders[i]``, off every g_j it
    conflicts with; the projected gradients averaged."""
    out = []
    for i, order in enumerate(orders):
        g = grads[i].clone()
        for j in order:
            dot = g @ grads[j]
            if dot < 0:
                g = g - dot / (grads[j] @ grads[j]) * grads[j]
        out.append(g)
    return torch.stack(out).mean(0)


def test_pcgrad_update_is_the_authors_for_one_of_the_orders() -> None:
    grads = random_grads(3, seed=3, shift=0.0)
    gram = grads @ grads.T
    assert (gram < 0).sum() >= 2  # the set-up: conflicting pairs exist
    update = grads.T @ weigh("pcgrad", grads)
    candidates = []
    for perms in itertools.product(*(itertools.permutations([j for j in range(3) if j != i]) for i in range(3))):
        candidates.append(authors_pcgrad(grads, [list(p) for p in perms]))
    gaps = [float((update - c).norm() / c.norm()) for c in candidates]
    assert min(gaps) < 1e-10, f"no order reproduces the update (closest {min(gaps):.2e})"


def test_pcgrad_randomness_is_owned() -> None:
    grads = random_grads(6, seed=4, shift=0.0)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    b = create_balancer("pcgrad", 6, seed=7)
    first = [b.solve(grads, torch.ones(6, dtype=F64)) for _ in range(5)]
    assert torch.equal(torch.get_rng_state(), before), "the global generator was consumed"
    b.reset()
    again = [b.solve(grads, torch.ones(6, dtype=F64)) for _ in range(5)]
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert any(not torch.equal(first[0], x) for x in first[1:]), "orders never changed the weights"


def authors_cagrad(grads: Tensor, c: float) -> Tensor:
    """The authors' cagrad(grads, alpha=c, rescale=1) (Cranial-XIX/CAGrad): SLSQP on the simplex for
    min_w wᵀ M 1/K + c|g0| sqrt(wᵀ M w), then (g0 + c|g0|/|g_w| g_w) / (1 + c²)."""
    k = grads.shape[0]
    m = (grads @ grads.T).numpy()
    b = np.full(k, 1 / k)
    g0_norm = float(np.sqrt(m.mean() + 1e-8))
    radius = c * g0_norm + 1e-8

    def objective(w: np.ndarray) -> float:
        return float(w @ m @ b + radius * np.sqrt(w @ m @ w + 1e-8))

    res = minimize(objective, b.copy(), bounds=[(0, 1)] * k, constraints={"type": "eq", "fun": lambda w: 1 - w.sum()},
                   options={"ftol": 1e-12, "maxiter": 1000})
    gw = grads.T @ torch.from_numpy(res.x)
    g = grads.mean(0) + radius / (gw.norm() + 1e-8) * gw
    return g / (1 + c**2)


@pytest.mark.parametrize("k, seed, c", [(2, 0, 0.4), (3, 1, 0.5), (5, 2, 0.8), (4, 3, 0.2)])
def test_cagrad_update_matches_the_authors_solver(k: int, seed: int, c: float) -> None:
    grads = random_grads(k, seed=seed, shift=0.0)
    update = grads.T @ weigh("cagrad", grads, c=c)
    expected = authors_cagrad(grads, c)
    # two different solvers (Clarabel on a factor of the normalised Gramian vs SLSQP): 1e-4 relative
    assert float((update - expected).norm() / expected.norm()) < 1e-4


def test_upgrad_update_conflicts_with_no_task() -> None:
    for seed in range(4):
        grads = random_grads(5, seed=seed, shift=0.0)
        assert (grads @ grads.T < 0).any()  # the set-up
        d = grads.T @ weigh("upgrad", grads)
        # g_jᵀ d ≥ 0 up to the effect of TorchJD's 1e-4 ridge on the trace-normalised Gramian
        assert float((grads @ d).min()) >= -1e-3 * float(grads.norm(dim=1).max() * d.norm())


def test_aligned_mtl_weights_from_the_eigendecomposition() -> None:
    grads = random_grads(4, seed=5)
    m = grads @ grads.T
    lam, v = torch.linalg.eigh(m)
    b = lam.min().sqrt() * v @ torch.diag(lam.rsqrt()) @ v.T
    torch.testing.assert_close(weigh("aligned_mtl", grads), b @ torch.full((4,), 0.25, dtype=F64))
    # the aligned matrix B G has Gramian λ_min I: condition number one
    torch.testing.assert_close(b @ m @ b, lam.min() * torch.eye(4, dtype=F64))
    # LibMTL's version (preference 1, not 1/K) is K times these weights
    torch.testing.assert_close(b.sum(0), 4 * weigh("aligned_mtl", grads))


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("scale", [1e-8, 1e6])
def test_weights_do_not_depend_on_the_gradients_scale(name: str, scale: float) -> None:
    """The trace normalisation keeps TorchJD's absolute thresholds from acting on small gradients."""
    grads = random_grads(4, seed=6, shift=0.0)
    torch.testing.assert_close(weigh(name, grads * scale), weigh(name, grads), rtol=1e-6, atol=1e-9)


# ------------------------------------------------- the project's methods against TorchJD's
def test_imtlg_equals_torchjd_imtlg_weighting() -> None:
    from torchjd.aggregation import IMTLGWeighting

    for k, seed in ((2, 0), (3, 1), (6, 2)):
        m = (lambda g: g @ g.T)(random_grads(k, seed=seed))
        torch.testing.assert_close(imtlg_weights(m), IMTLGWeighting()(m), rtol=1e-9, atol=1e-12)
    same = torch.ones(3, 3, dtype=F64)  # identical gradients: both give the uniform weights
    torch.testing.assert_close(imtlg_weights(same), IMTLGWeighting()(same))


def test_mgda_is_at_least_as_good_as_torchjd_and_agrees_when_it_converges() -> None:
    """TorchJD's MGDAWeighting is Sener & Koltun's plain Frank-Wolfe (step-size stop, 100 iterations
    by default); ours runs away-step Frank-Wolfe to a duality gap of 1e-12."""
    from torchjd.aggregation import MGDAWeighting

    for k, seed in ((3, 1), (4, 2), (5, 3)):
        m = (lambda g: g @ g.T)(random_grads(k, seed=seed, shift=0.5))
        ours = min_norm_weights(m)
        loose, tight = MGDAWeighting()(m), MGDAWeighting(epsilon=1e-9, max_iters=100_000)(m)
        assert float(ours @ m @ ours) <= float(loose @ m @ loose) + 1e-12 * float(m.trace())
        assert float(ours @ m @ ours) <= float(tight @ m @ tight) + 1e-12 * float(m.trace())
        # plain Frank-Wolfe converges sublinearly: 1e-3 is 10x its measured gap (≤ 8e-5)
        torch.testing.assert_close(ours, tight, rtol=0, atol=1e-3)


def test_nashmtl_direction_equals_the_reference_solver() -> None:
    """TorchJD's NashMTL weighting (the reference code's cvxpy/ECOS sequential solver; max_norm 0 = no
    clipping) and ``nashmtl`` give proportional weights: the same update direction. The reference's
    α solves (G Gᵀ) α = 1/α on the unnormalised Gramian; the scale of ``nashmtl``'s weights is
    compared in docs/fidelity.md (it depends on which system ``nash_weights`` solves)."""
    pytest.importorskip("ecos", reason="TorchJD's NashMTL needs the torchjd[nash-mtl] extra (dev dependency)")
    from torchjd.aggregation._nash_mtl import _NashMTLWeighting

    for k, seed in ((3, 0), (4, 1), (6, 2)):
        grads = random_grads(k, seed=seed, shift=0.3)
        m = grads @ grads.T
        reference = _NashMTLWeighting(n_tasks=k, max_norm=0.0, update_weights_every=1, optim_niter=20)
        theirs = reference(grads)
        assert float((m @ theirs * theirs - 1).abs().max()) < 1e-3  # the reference: α_i (GGᵀα)_i = 1
        ratio = nash_weights(m) / theirs
        # the reference stops at ||M a - 1/a|| < 1e-3 (normalised units): 1e-2 relative holds with margin
        assert float(ratio.max() / ratio.min() - 1) < 1e-2, f"not proportional: ratios {ratio.tolist()}"
