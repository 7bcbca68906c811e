"""MARIGOLD: multi-task gradient balancing via zeroth-order bi-level differentiation."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from collections.abc import Sequence
from numbers import Integral
from typing import Any

import torch
from torch import Tensor

from balancers._functional_optim import adam_step_, check_supported, param_slots, virtual_step
from balancers.base import Balancer, LossClosure
from balancers.registry import register

_VARIANTS = ("faithful", "fused")
_ESTIMATORS = ("single_point", "two_point")
_OBJECTIVES = ("worst_case", "auxiliary")


@register(
    "marigold",
    description="MARIGOLD: zeroth-order bilevel gradient balancing (one hypergradient per step)",
    paper="Feed m Birds with One Scone (MARIGOLD), Alg. 1-2, App. C",
    needs_closure=True,
    needs_model=True,
    stochastic=True,
    stateful=True,
    needs_unclipped_step=True,
)
class Marigold(Balancer):
    r"""MARIGOLD (Feed m Birds with One Scone, Alg. 1 "Hypergrad", Alg. 2, App. C).

    The paper's algorithm is the default, ``variant="faithful", estimator="single_point"``: Sec.
    3.4 adopts the single-point zeroth-order estimate in Alg. 1 by choice ("for efficient
    computation"). ``estimator="two_point"`` and ``variant="fused"`` are this project's
    extensions, not in the paper (see below); they are offered for their lower variance and lower
    cost, and are named as such wherever results are reported.

    Task weights solve, at every step k, the surrogate min-max problem (9) of the paper
    ``min_lambda max_rho Phi_k = sum_i rho_i (f_i(A(lambda, theta^k)) - f_i(theta^k))`` where
    ``A(lambda, theta)`` is ONE step of the model's own optimizer on ``sum_i lambda_i f_i``.
    Parameterisation (App. C): ``lambda = softmax(beta u / f)``, ``rho = softmax(beta v / f)``,
    u, v in R^m start at 0, f = the current batch's task losses (detached; must be > 0).
    One step, with ``d ~ Unif(S^{m-1})`` (a normalised Gaussian from the balancer's own generator)::

        f_pert  = f(A(lambda^k + r d, theta^k))                    (same batch, via the closure)
        g_lam   = (m / r) * rho^k . f_pert * d                     single_point (Alg. 1)
        g_lam   = (m / r) * rho^k . (f_pert - f(A(lambda^k, theta^k))) * d       two_point
        g_rho   = f_pert - f(theta^k)
        u <- Adam descent on (d lambda/d u)^T g_lam,  v <- Adam ascent on (d rho/d v)^T g_rho
        (one torch Adam over [u, v], lr = w_lr; ascent = negated v gradient)
        real step: theta^{k+1} = A(softmax(beta u^{k+1} / f), theta^k)       (Alg. 2, line 5)

    Choices where the paper is silent, and why:
    * The perturbation is added to lambda itself (post-softmax): Alg. 1 literally evaluates
      ``A(lambda + r u)`` with the factor m/r, i.e. Lemma 3.1 with d = m on the sphere of R^m.
      ``lambda + r d`` may leave the simplex slightly; A is defined for any weight vector. The
      estimate of grad_lambda Phi is then pulled back to u by the chain rule through the softmax.
    * f in the temperature is the current batch's detached losses (App. C writes f without an
      index; the batch value is the only one available without extra passes), and g_rho uses
      f(theta^k) of the same batch, so both terms of (11) see the same data B, as in Alg. 1.
    * A uses the optimizer's *current* state and learning rate (exp_avg, exp_avg_sq, step,
      momentum_buffer), computed out of place (``balancers._functional_optim.virtual_step``), on
      the unclipped gradients: gradient clipping is refused (see the trainer contract).

    This project's extensions (not the paper's algorithm):
    * ``estimator="two_point"`` subtracts the unperturbed value f(A(lambda^k, theta^k)): same
      expectation (E[d] = 0), far lower variance, one more virtual step per training step.
    * ``variant="fused"`` takes the perturbed step as the real step (below), saving a backward.

    Variants and model passes per training step (fwd/bwd = full forward/backward of the model;
    the trainer's own forward and backward included; the m-dimensional softmax pull-back and Adam
    on u, v are negligible and not counted):
    * ``faithful`` (Alg. 2, default): ``combine`` backprops ``sum (lambda^k + r d)_i f_i`` with
      ``autograd.grad(retain_graph=True)``, does the virtual step, evaluates the closure at the
      virtual parameters (no grad), updates u, v, and returns ``sum lambda^{k+1}_i f_i``.
      single_point: 2 fwd + 2 bwd.  two_point: 3 fwd + 3 bwd.
    * ``fused``: the real step IS the perturbed step (saves the virtual backward): ``combine``
      returns ``sum (lambda^k + r d)_i f_i``; ``step(closure)``, after ``optimizer.step()``, reads
      f(theta^{k+1}) = f(A(lambda^k + r d, theta^k)) with one no-grad forward and updates u, v.
      two_point does the unperturbed virtual step inside ``combine``, before the real step.
      single_point: 2 fwd + 1 bwd.  two_point: 3 fwd + 2 bwd.
    ``weights`` is d loss / d f_i: lambda^{k+1} (faithful, on the simplex) or lambda^k + r d (fused,
    possibly slightly off it: ``nonnegative_weights`` and ``weights_sum_to_one`` are False).

    Upper-level objective (Sec. 3.5: weights minimise a user-specified ``R(lambda, theta)``):
    ``objective="worst_case"`` (default) is the worst-case decrement (4)/(9) above, unchanged.
    ``objective="auxiliary"`` with ``main_tasks`` (task indices; >= 1 task left auxiliary) is the
    paper's auxiliary-learning instance, Eq. 13-14, with its surrogate ``min_w f_main(A(w, theta^k))``::

        lambda(omega)_i = 1 (i main),  omega_j (j auxiliary)        lower level, Eq. 14
        R(omega) = sum_{i main} f_i(A(lambda(omega), theta^k))        upper level, Eq. 13
        g_omega = (p / r) R(A(lambda + r (0, d))) d                   single_point, d ~ Unif(S^{p-1})
        g_omega = (p / r) (R(A(lambda + r (0, d))) - R(A(lambda))) d  two_point
        omega <- Adam descent on g_omega (lr = w_lr);  p = number of auxiliary tasks

    i.e. Alg. 1 in dimension p with rho frozen at the main tasks' indicator (``zo_hypergradient``).
    Main tasks are weighted as Eq. 14 weights them: fixed to 1, not learned, not on a simplex;
    omega is unconstrained as Eq. 13's ``omega in R`` (no softmax, no rho, no v; ``beta`` unused;
    losses need not be positive). Choices where the paper is silent or differs: omega^0 = 1, so
    training starts at LS, Table 4's baseline; Sec. 3.5 writes ``lambda in Delta^m`` for a general
    R but its one auxiliary instance (Eq. 14) fixes the main weights at 1 -- we follow the
    instance; Eq. 14 also keeps two main tasks at weight 1 outside R (R = f_click alone), here the
    tasks at weight 1 and the tasks of R are one set. Passes per step as above (the closure's one
    forward gives every loss). ``weights`` = lambda(omega) (faithful) or its perturbation (fused):
    sums to |main| + sum(omega), may be negative; with Adam that scale matters only via eps and
    coupled weight decay.

    Trainer contract: ``attach(model, optimizer)`` first (SGD, Adam or AdamW); a closure
    ``closure(params=None) -> losses_K`` on the same batch, no autograd, no BN-statistics update,
    no new dropout masks; ``step(closure)`` after every ``optimizer.step()``. Both variants assume
    the optimizer step uses exactly the gradients of the returned loss, as A does (no AMP skips, no
    clipping: with ``train.grad_clip`` the real step would differ from the virtual step whose
    hypergradient is estimated, so the registry metadata ``needs_unclipped_step`` makes the trainer
    refuse that configuration with one line).
    Positivity of the losses is checked (one host sync) only while ``check_values`` is on;
    otherwise a non-positive loss turns the weights into NaN rather than silently clamping.
    """

    def __init__(self, n_tasks: int, beta: float = 1.0, r: float = 1e-3, w_lr: float = 1e-4,
                 variant: str = "faithful", estimator: str = "single_point", objective: str = "worst_case",
                 main_tasks: Sequence[int] | None = None, seed: int = 0) -> None:
        super().__init__(n_tasks)
        for name, x in (("beta", beta), ("r", r), ("w_lr", w_lr)):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
                raise ValueError(f"MARIGOLD {name} must be a finite number > 0, got {name}={x!r}")
        if variant not in _VARIANTS:
            raise ValueError(f"MARIGOLD variant must be one of {_VARIANTS}, got {variant=}")
        if estimator not in _ESTIMATORS:
            raise ValueError(f"MARIGOLD estimator must be one of {_ESTIMATORS}, got {estimator=}")
        if objective not in _OBJECTIVES:
            raise ValueError(f"MARIGOLD objective must be one of {_OBJECTIVES}, got {objective=}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"MARIGOLD seed must be an integer >= 0, got {seed=}")
        self.main_tasks = _main_tasks(objective, main_tasks, n_tasks)
        self.beta, self.r, self.w_lr = float(beta), float(r), float(w_lr)
        self.variant, self.estimator, self.objective, self.seed = variant, estimator, objective, seed
        auxiliary = objective == "auxiliary"
        self.nonnegative_weights = self.weights_sum_to_one = variant == "faithful" and not auxiliary
        if auxiliary:  # omega: the auxiliary tasks' weights; the main tasks' weights are fixed to 1
            aux = [i for i in range(n_tasks) if i not in self.main_tasks]
            self.register_buffer("omega", torch.ones(len(aux)))
            self.register_buffer("_aux_index", torch.tensor(aux), persistent=False)
            mask = torch.zeros(n_tasks).index_fill_(0, torch.tensor(self.main_tasks), 1.0)
            self.register_buffer("_main_mask", mask, persistent=False)
        else:
            self.register_buffer("u", torch.zeros(n_tasks))
            self.register_buffer("v", torch.zeros(n_tasks))
        self._gen = torch.Generator(device="cpu")
        self._target: tuple[torch.nn.Module, torch.optim.Optimizer] | None = None  # not a submodule
        #: set by a data-parallel trainer: averages the virtual step's gradients over the processes
        #: (``autograd.grad`` bypasses DDP's gradient hooks); None: one process
        self.reduce_grads: Callable[[tuple[Tensor | None, ...]], tuple[Tensor | None, ...]] | None = None
        self.reset()

    def hparams(self) -> dict[str, Any]:
        return {"beta": self.beta, "r": self.r, "w_lr": self.w_lr, "variant": self.variant,
                "estimator": self.estimator, "objective": self.objective, "main_tasks": self.main_tasks,
                "seed": self.seed}

    def attach(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        check_supported(optimizer)
        self._target = (model, optimizer)

    def reset(self) -> None:
        super().reset()
        if self.objective == "auxiliary":
            self.omega.fill_(1.0)  # omega^0 = 1: training starts at linear scalarisation (Table 4's LS)
            self._record(self._aux_lambda())
        else:
            self.u.zero_()
            self.v.zero_()
        self._adam = torch.optim.Adam(self._learned(), lr=self.w_lr)
        self._gen.manual_seed(self.seed)
        self._pending: tuple[Tensor | None, ...] | None = None

    # ------------------------------------------------------------------------------ the method
    def combine(self, losses: Tensor, closure: LossClosure | None) -> Tensor:
        if self.objective == "auxiliary":
            return self._combine_auxiliary(losses, closure)
        f = self._temperature(losses)
        lam = self._lambda(f)
        direction = self._direction(f)
        perturbed = lam + self.r * direction
        base = self._virtual_losses(losses, lam, closure) if self.estimator == "two_point" else None
        if self.variant == "fused":
            self._pending = (f, lam, direction, base)
            self._record(perturbed)
            return (perturbed.to(losses.dtype) * losses).sum()
        self._update(f, lam, self._virtual_losses(losses, perturbed, closure), base, direction)
        lam = self._lambda(f)
        self._record(lam)
        return (lam.to(losses.dtype) * losses).sum()

    def step(self, closure: LossClosure | None = None) -> None:
        if self.variant != "fused":
            return
        if self._pending is None:
            raise RuntimeError(f"{self}: step() must follow a combine() call (fused variant)")
        if closure is None:
            raise ValueError(f"{self}: the fused variant needs the loss closure in step()")
        pending, self._pending = self._pending, None
        with torch.no_grad():
            perturbed_losses = closure().detach()
        if self.objective == "auxiliary":
            direction, base = pending
            self._update_auxiliary(perturbed_losses.to(direction.dtype), base, direction)
            return
        f, lam, direction, base = pending
        self._update(f, lam, perturbed_losses.to(f.dtype), base, direction)

    @staticmethod
    def zo_hypergradient(rho: Tensor, perturbed: Tensor, base: Tensor | None, direction: Tensor, r: float) -> Tensor:
        """Alg. 1's estimate of grad_lambda Phi_k: ``(m/r) rho.(f(A(lam + r d)) [- f(A(lam))]) d``.

        Broadcasts over leading dimensions of ``perturbed``/``base``/``direction`` (tests use it).
        """
        phi = (rho * perturbed).sum(-1, keepdim=True)
        if base is not None:
            phi = phi - (rho * base).sum(-1, keepdim=True)
        return (direction.shape[-1] / r) * phi * direction

    # ------------------------------------------------------------------- the auxiliary objective
    def _combine_auxiliary(self, losses: Tensor, closure: LossClosure | None) -> Tensor:
        """One step of Sec. 3.5 / Eq. 13-14: omega descends R = sum_{i in main} f_i(A(lambda(omega)))."""
        lam = self._aux_lambda()
        direction = self._direction(lam, self.omega.numel())
        perturbed = self._aux_perturb(lam, direction)
        base = self._virtual_losses(losses, lam, closure) if self.estimator == "two_point" else None
        if self.variant == "fused":
            self._pending = (direction, base)
            self._record(perturbed)
            return (perturbed.to(losses.dtype) * losses).sum()
        self._update_auxiliary(self._virtual_losses(losses, perturbed, closure), base, direction)
        lam = self._aux_lambda()
        self._record(lam)
        return (lam.to(losses.dtype) * losses).sum()

    def _aux_lambda(self) -> Tensor:
        """(K,) lower-level weights of Eq. 14: 1 for each main task, omega for the auxiliary ones."""
        ones = torch.ones(self.n_tasks, dtype=self.omega.dtype, device=self.omega.device)
        return ones.index_copy(0, self._aux_index, self.omega)

    def _aux_perturb(self, lam: Tensor, direction: Tensor) -> Tensor:
        """``lambda + r (0_main, d)``: only the learned (auxiliary) coordinates are perturbed."""
        return lam.index_add(0, self._aux_index, self.r * direction)

    def _aux_hypergradient(self, perturbed: Tensor, base: Tensor | None, direction: Tensor) -> Tensor:
        """Alg. 1 on omega in R^p: ``(p/r) (R(A(lam + r d)) [- R(A(lam))]) d``, R = main-task sum."""
        return self.zo_hypergradient(self._main_mask.to(perturbed.dtype), perturbed, base, direction, self.r)

    def _update_auxiliary(self, perturbed: Tensor, base: Tensor | None, direction: Tensor) -> None:
        grad = self._aux_hypergradient(perturbed, base, direction)
        self._sync_adam()
        adam_step_(self._adam, [self.omega], [grad.to(self.omega.dtype)])

    # ------------------------------------------------------------------------------ internals
    def _temperature(self, losses: Tensor) -> Tensor:
        f = losses.detach().to(self.u.dtype)
        if self.check_values:
            self._check_range(f)
            return f
        return torch.where(f > 0, f, torch.full_like(f, float("nan")))

    def _check_range(self, losses: Tensor) -> None:
        if self.objective == "auxiliary":  # no temperature: any finite loss will do
            return
        if not bool((losses > 0).all()):
            raise ValueError(
                f"{self}: MARIGOLD's softmax temperature divides by the task losses "
                f"(lambda = softmax(beta u / f), App. C), so every loss must be > 0; got {losses.tolist()}")

    def _lambda(self, f: Tensor) -> Tensor:
        """``softmax(beta u / f)`` alone (the first half of ``_simplex``; rho is not needed here)."""
        return torch.softmax(self.beta * self.u / f, 0)

    def _simplex(self, u: Tensor, v: Tensor, f: Tensor) -> tuple[Tensor, Tensor]:
        return torch.softmax(self.beta * u / f, 0), torch.softmax(self.beta * v / f, 0)

    def _direction(self, like: Tensor, dim: int | None = None) -> Tensor:
        """d ~ Unif(S^{dim-1}) (dim: K, or the number of auxiliary tasks), from the own generator."""
        z = torch.randn(self.n_tasks if dim is None else dim, generator=self._gen, dtype=torch.float64)
        return (z / z.norm()).to(device=like.device, dtype=like.dtype)

    def _virtual_losses(self, losses: Tensor, weights: Tensor, closure: LossClosure | None) -> Tensor:
        """f(A(weights, theta)) on the same batch: 1 backward (graph kept) + 1 no-grad forward."""
        if self._target is None:
            raise RuntimeError(f"{self}: call attach(model, optimizer) before training")
        if closure is None:
            raise ValueError(f"{self}: MARIGOLD needs the same-batch loss closure")
        if not losses.requires_grad:
            raise RuntimeError(f"{self}: losses must carry the model's autograd graph")
        model, optimizer = self._target
        named = dict(model.named_parameters())
        slots = param_slots(optimizer, named)
        names = [n for n in slots if named[n].requires_grad]
        if not names:
            raise RuntimeError(f"{self}: the optimizer owns no trainable parameter of the model")
        weighted = (weights.to(losses.dtype) * losses).sum()
        raw = torch.autograd.grad(weighted, [named[n] for n in names], retain_graph=True, allow_unused=True)
        if self.reduce_grads is not None:  # data parallel: the average DDP's hooks would have taken
            raw = self.reduce_grads(raw)
        grads = dict(zip(names, raw))
        with torch.no_grad():
            # one parameter at a time, largest first, dropping each gradient once used: the virtual
            # parameters and the gradients never coexist in full, and the update's temporaries of
            # the largest parameter do not come on top of the other virtual parameters (peak memory)
            done: dict[str, Tensor] = {}
            for name in sorted(named, key=lambda n: -named[n].numel()):
                g = grads.pop(name, None)
                done.update(virtual_step(optimizer, {name: named[name]}, {} if g is None else {name: g}, slots))
                del g
            virtual = {name: done[name] for name in named}
            del done
            return closure(virtual).detach().to(weights.dtype)

    def _update(self, f: Tensor, lam: Tensor, perturbed: Tensor, base: Tensor | None, direction: Tensor) -> None:
        """Pull g_lambda, g_rho back through the softmaxes; Adam descent on u, ascent on v."""
        rho = torch.softmax(self.beta * self.v / f, 0)  # lam (u unchanged since) comes from combine
        g_lam = self.zo_hypergradient(rho, perturbed, base, direction, self.r)
        g_rho = perturbed - f
        # the pull-back through lambda = softmax(beta u / f) (rho likewise) with the kernels and in
        # the order autograd's backward of (beta * u) / f -> softmax runs them (same values as
        # autograd.grad), and the Adam step, without autograd's and Optimizer.step's per-call
        # Python overhead (larger than this K-sized arithmetic)
        grad_u = torch._softmax_backward_data(g_lam.to(lam.dtype), lam, 0, lam.dtype) / f * self.beta
        grad_v = torch._softmax_backward_data(g_rho.to(rho.dtype), rho, 0, rho.dtype) / f * self.beta
        self._sync_adam()
        adam_step_(self._adam, [self.u, self.v], [grad_u, -grad_v])

    def _learned(self) -> list[Tensor]:
        """What the upper-level Adam updates: [u, v] (worst case) or [omega] (auxiliary)."""
        return [self.omega] if self.objective == "auxiliary" else [self.u, self.v]

    def _sync_adam(self) -> None:
        """Rebuild the Adam over the current buffers (``.to()`` replaces them), keeping its state."""
        learned = self._learned()
        if self._adam.param_groups[0]["params"][0] is not learned[0]:
            state = self._adam.state_dict()
            self._adam = torch.optim.Adam(learned, lr=self.w_lr)
            self._adam.load_state_dict(state)

    def _extra_state(self) -> dict[str, Any]:
        return {"extra.adam": copy.deepcopy(self._adam.state_dict()), "extra.generator": self._gen.get_state()}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        missing = {"extra.adam", "extra.generator"} - set(extra)
        if missing:
            raise ValueError(f"{self}: state_dict lacks {sorted(missing)}")
        self._adam.load_state_dict(copy.deepcopy(extra["extra.adam"]))
        self._gen.set_state(extra["extra.generator"])
        self._pending = None


def _main_tasks(objective: str, main_tasks: Sequence[int] | None, n_tasks: int) -> list[int] | None:
    """Validated ``main_tasks``: None for the worst case; distinct task indices, not all, for auxiliary."""
    if objective == "worst_case":
        if main_tasks is not None:
            raise ValueError(f"MARIGOLD main_tasks applies only to objective='auxiliary', got {main_tasks=} "
                             f"with {objective=}")
        return None
    if isinstance(main_tasks, (str, bytes)) or not isinstance(main_tasks, Sequence) or not main_tasks:
        raise ValueError(f"MARIGOLD objective='auxiliary' needs main_tasks, a non-empty list of task indices "
                         f"in [0, {n_tasks}), got {main_tasks=}")
    if not all(isinstance(i, Integral) and not isinstance(i, bool) for i in main_tasks):
        raise ValueError(f"MARIGOLD main_tasks must be task indices (integers in [0, {n_tasks}), not names), "
                         f"got {main_tasks=}")
    indices = [int(i) for i in main_tasks]
    if not all(0 <= i < n_tasks for i in indices):
        raise ValueError(f"MARIGOLD main_tasks must lie in [0, {n_tasks}) (n_tasks={n_tasks}), got {main_tasks=}")
    if len(set(indices)) != len(indices):
        raise ValueError(f"MARIGOLD main_tasks must be distinct, got {main_tasks=}")
    if len(indices) == n_tasks:
        raise ValueError(f"MARIGOLD main_tasks must leave at least one auxiliary task (its weight is what is "
                         f"learned), got {main_tasks=} for n_tasks={n_tasks}")
    return indices
