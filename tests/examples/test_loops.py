"""The loops of docs/usage.md run: ``examples/plain_loop.py`` (plain PyTorch) and
``examples/lightning_loop.py`` (PyTorch Lightning, manual optimisation) train with balancers that
need a closure (FAMO), the model (MARIGOLD, MGDA) or the optimizer (UW's parameters), and every
task's validation loss comes down; the code docs/usage.md quotes is the code of these files."""

from __future__ import annotations

import importlib
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
USAGE = ROOT / "docs" / "usage.md"


@pytest.fixture(scope="module")
def plain_loop(request):
    sys.path.insert(0, str(EXAMPLES))  # as `python examples/plain_loop.py` has it
    request.addfinalizer(lambda: sys.path.remove(str(EXAMPLES)))
    return importlib.import_module("plain_loop")


def untrained_val_losses(plain_loop, seed: int = 0) -> list[float]:
    """The validation losses before training (the loops build the model right after seeding)."""
    torch.manual_seed(seed)
    model = plain_loop.MultiTaskNet()
    x, y = plain_loop.make_data(seed=seed)
    with torch.no_grad():
        return plain_loop.task_losses(model(x[768:]), y[768:]).tolist()


def geometric_mean_ratio(after: list[float], before: list[float]) -> float:
    assert len(after) == len(before) == 3 and all(math.isfinite(a) and a > 0 for a in after), after
    return math.exp(sum(math.log(a / b) for a, b in zip(after, before)) / len(after))


@pytest.mark.parametrize("name", ["famo", "marigold", "uw", "mgda"])
def test_the_plain_loop_trains_every_kind_of_balancer(plain_loop, name: str) -> None:
    # 5 epochs bring the geometric mean of val/initial to 0.22-0.31 for these; 0.6 leaves a wide margin
    ratio = geometric_mean_ratio(plain_loop.train(name, epochs=5), untrained_val_losses(plain_loop))
    assert ratio < 0.6, f"{name}: validation losses only fell to {ratio:.3f} of the untrained model's"


def test_the_plain_loop_runs_as_a_script() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLES / "plain_loop.py"), "famo"], capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert re.match(r"famo +validation losses: [\d.e-]+, [\d.e-]+, [\d.e-]+$", done.stdout.strip()), done.stdout


@pytest.mark.parametrize("name", ["famo", "marigold", "uw"])
def test_the_lightning_loop_trains_with_manual_optimisation(plain_loop, name: str) -> None:
    pytest.importorskip("lightning", reason="PyTorch Lightning is not installed (pip install 'balancebench[lightning]')")
    lightning_loop = importlib.import_module("lightning_loop")
    metrics = lightning_loop.fit(name, epochs=5)
    after = [metrics[f"val_loss/task{i}"] for i in range(3)]
    ratio = geometric_mean_ratio(after, untrained_val_losses(plain_loop))
    assert ratio < 0.6, f"{name} in Lightning: validation losses only fell to {ratio:.3f} of the untrained model's"


def test_the_balancer_is_part_of_the_lightning_checkpoint(plain_loop) -> None:
    pytest.importorskip("lightning", reason="PyTorch Lightning is not installed (pip install 'balancebench[lightning]')")
    module = importlib.import_module("lightning_loop").MultiTaskModule("famo")
    state = module.state_dict()
    assert "balancer.logits" in state and "balancer._extra_state" in state, sorted(state)


def _quoted_blocks() -> list[tuple[str, str]]:
    """(file, code) of each ```python block of docs/usage.md whose first line is ``# examples/<file>``."""
    blocks = re.findall(r"```python\n# (examples/[\w/]+\.py)[^\n]*\n(.*?)```", USAGE.read_text(encoding="utf-8"), re.S)
    return [(name, code) for name, code in blocks]


def test_docs_usage_quotes_the_example_files_verbatim() -> None:
    blocks = _quoted_blocks()
    assert {name for name, _ in blocks} >= {"examples/plain_loop.py", "examples/lightning_loop.py"}
    for name, code in blocks:
        source = (ROOT / name).read_text(encoding="utf-8")
        for part in re.split(r"\n *# \.\.\.\n", code):  # "# ..." marks lines left out of the quote
            assert part.strip() and part.strip() in source, f"docs/usage.md quotes {name}, but the file no longer has:\n{part}"
