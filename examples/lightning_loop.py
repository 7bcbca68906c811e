"""A balancebench balancer in PyTorch Lightning, with manual optimisation (quoted in docs/usage.md).

Run it: ``python examples/lightning_loop.py [balancer ...]`` (needs ``pip install 'balancebench[lightning]'``).
A balancer decides the loss *and* acts around the optimizer step (FAMO updates its logits after
it, MARIGOLD simulates it), so the LightningModule turns automatic optimisation off and runs the
step itself: ``manual_backward``, ``balancer.after_backward()``, ``opt.step()``,
``balancer.step(closure)``. The balancer is a submodule: Lightning moves it to the device and
saves its state (logits, optimizer state, generator) in checkpoints.
"""

from __future__ import annotations

import sys

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from balancers import balancer_info, create_balancer
from plain_loop import K, MultiTaskNet, make_closure, make_data, task_losses


class MultiTaskModule(L.LightningModule):
    """A multi-task network trained with one balancebench balancer, chosen by name."""

    def __init__(self, balancer: str = "famo", lr: float = 3e-3, **hparams) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.net = MultiTaskNet()
        self.info = balancer_info(balancer)
        self.balancer = create_balancer(balancer, n_tasks=K, **hparams)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = [{"params": list(self.net.parameters())}]
        if self.info.has_parameters:  # e.g. UW's log-variances, in a group of their own
            own_lr = self.balancer.learnables_lr or self.hparams.lr
            groups.append({"params": [p for _, p in self.balancer.named_learnables()], "lr": own_lr,
                           "weight_decay": 0.0})
        return torch.optim.Adam(groups, lr=self.hparams.lr)

    def on_fit_start(self) -> None:
        if self.info.needs_model:  # the raw torch optimizer, not Lightning's wrapper
            self.balancer.attach(self.net, self.optimizers().optimizer)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        losses = task_losses(self.net(x), y)
        closure = make_closure(self.net, x, y) if self.balancer.uses_closure else None
        loss = self.balancer(losses, closure=closure)
        self.manual_backward(loss)
        self.balancer.after_backward()
        opt.step()
        self.balancer.step(closure)
        # logged tensors stay on the device; Lightning syncs them every log_every_n_steps
        self.log_dict({**{f"loss/task{i}": losses[i].detach() for i in range(K)},
                       **{f"weight/task{i}": self.balancer.weights[i] for i in range(K)}})
        return loss.detach()

    def on_train_epoch_end(self) -> None:
        self.balancer.epoch_end()  # DWA, STCH; no-op otherwise

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        losses = task_losses(self.net(x), y)
        self.log_dict({f"val_loss/task{i}": losses[i] for i in range(K)})


def fit(balancer: str = "famo", epochs: int = 10, seed: int = 0, **hparams) -> dict[str, float]:
    """Train with ``balancer``; returns the last validation losses (``val_loss/task<i>``)."""
    L.seed_everything(seed, verbose=False)
    x, y = make_data(seed=seed)
    train = DataLoader(TensorDataset(x[:768], y[:768]), batch_size=64, shuffle=True,
                       generator=torch.Generator().manual_seed(seed))
    val = DataLoader(TensorDataset(x[768:], y[768:]), batch_size=256)
    module = MultiTaskModule(balancer, **hparams)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, train, val)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_loss/")}


if __name__ == "__main__":
    for name in sys.argv[1:] or ["famo", "marigold", "uw"]:
        print(f"{name:<10}", fit(name))
