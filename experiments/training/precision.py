"""Mixed precision for the trainer: autocast dtype, fp16's gradient scaler, skipped steps.

``train.precision``: ``fp32`` (no autocast), ``bf16`` (autocast to bfloat16, no scaler: bf16 has
fp32's exponent range), ``fp16`` (autocast to float16 with ``torch.amp.GradScaler``). The model's
forward runs under autocast; the task losses are cast to fp32 before the balancer, so every
balancer's own arithmetic stays fp32. The legacy flag ``train.bf16: true`` keeps its old meaning
(bf16 autocast on CUDA only, nothing on CPU) so that existing configs train as before; it cannot
be combined with a ``precision`` other than fp32.

Skipped steps (fp16): when the scaled gradients overflow, the scaler skips ``optimizer.step()``.
:meth:`Precision.step` reports it (one host read of the scaler's found-inf flag, which the scaler's
own ``step`` already synchronises on), and the trainer then skips ``balancer.step(closure)``:
FAMO's same-batch logit update and fused MARIGOLD's hypergradient measure ``f(θ_{t+1})``, and
after a skipped step there is no ``θ_{t+1}`` to measure. MARIGOLD's virtual step back-propagates
the unscaled balanced loss with ``autograd.grad`` (the scaler never sees it), so it always uses
true gradients; the trainer unscales the real gradients before ``after_backward`` and clipping.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from experiments.errors import ConfigError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Precision:
    """The autocast dtype of a run (None: fp32) and, for fp16, its gradient scaler."""

    device: torch.device
    autocast_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None

    @classmethod
    def of(cls, train_cfg: Any, device: torch.device) -> Precision:
        name = getattr(train_cfg, "precision", "fp32")
        if train_cfg.bf16:
            if name != "fp32":
                raise ConfigError(f"train.bf16 is the legacy spelling of train.precision: bf16; "
                                  f"set only train.precision (got bf16: true and precision: {name})")
            name = "bf16" if device.type == "cuda" else "fp32"  # the flag's old meaning
        dtype = DTYPES[name]
        scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None
        return cls(device, dtype, scaler)

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                              enabled=self.autocast_dtype is not None)

    def backward(self, loss: Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """``optimizer.step()`` (through the scaler under fp16); False when the scaler skipped it."""
        if self.scaler is None:
            optimizer.step()
            return True
        self.scaler.step(optimizer)
        state = self.scaler._per_optimizer_states[id(optimizer)]
        skipped = bool(sum(v.item() for v in state["found_inf_per_device"].values()))
        self.scaler.update()
        return not skipped

    def state_dict(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
