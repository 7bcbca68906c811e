"""Golden values: every registered balancer's weights (and returned loss) on one fixed tiny problem.

Any change to a balancer's numbers fails here. If the change is intended, regenerate the table from
the repository root with::

    python -m tests.balancers.test_golden --regenerate

and commit ``tests/balancers/golden_weights.json`` together with the change. A newly registered
balancer has no entry and fails until it is pinned deliberately the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import CONFIGS, BalancerConfig, make_problem, parametrize_configs

GOLDEN_PATH = Path(__file__).with_name("golden_weights.json")
N_STEPS = 6
ATOL = 1e-5
REGENERATE = "python -m tests.balancers.test_golden --regenerate"


def golden_run(config: BalancerConfig) -> dict[str, list[Any]]:
    """Weights and loss after each of N_STEPS trainer steps (float64 model, one epoch per step)."""
    p = make_problem(config, dtype=torch.float64, scales=[1.0, 3.0, 0.5], epoch_every=1)
    weights, outputs = p.run(N_STEPS)
    return {
        "weights": [[round(float(x), 6) for x in w] for w in weights],
        "loss": [round(float(o), 6) for o in outputs],
    }


def load_golden() -> dict[str, Any]:
    if not GOLDEN_PATH.exists():
        return {}
    return json.loads(GOLDEN_PATH.read_text())


GOLDEN = load_golden()


@parametrize_configs()
def test_golden_weights(config: BalancerConfig) -> None:
    key = str(config)
    if key not in GOLDEN.get("balancers", {}):
        pytest.fail(
            f"no golden weights for {key}: pin them deliberately with `{REGENERATE}` "
            f"(writes {GOLDEN_PATH.name}) and commit the file"
        )
    expected = GOLDEN["balancers"][key]
    actual = golden_run(config)
    message = (
        f"golden weights changed for {key}: update tests/balancers/golden_weights.json "
        f"({REGENERATE}) ONLY if the change is intended"
    )
    for what in ("weights", "loss"):
        got = torch.tensor(actual[what], dtype=torch.float64)
        want = torch.tensor(expected[what], dtype=torch.float64)
        assert got.shape == want.shape, f"{message} ({what}: shape {tuple(got.shape)} != {tuple(want.shape)})"
        gap = float((got - want).abs().max())
        assert gap <= ATOL, f"{message} ({what} differ by up to {gap:.2e}: got {actual[what]}, pinned {expected[what]})"


def test_golden_table_has_no_stale_entries() -> None:
    current = {str(c) for c in CONFIGS}
    stale = sorted(set(GOLDEN.get("balancers", {})) - current)
    assert not stale, f"golden entries for unregistered balancers {stale}: regenerate with `{REGENERATE}`"


def regenerate() -> None:
    table = {
        "about": f"weights and loss after each of {N_STEPS} steps of tests.balancers.test_golden.golden_run; "
        f"regenerate with `{REGENERATE}` ONLY for intended changes",
        "torch": torch.__version__,
        "balancers": {str(c): golden_run(c) for c in CONFIGS},
    }
    # one line per balancer and quantity, so that a diff shows which numbers moved
    lines = [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in table.items() if k != "balancers"]
    lines.append(' "balancers": {')
    for i, (name, entry) in enumerate(table["balancers"].items()):
        lines.append(f"  {json.dumps(name)}: {{")
        lines.append(f'   "weights": {json.dumps(entry["weights"])},')
        lines.append(f'   "loss": {json.dumps(entry["loss"])}')
        lines.append("  }" + ("," if i < len(table["balancers"]) - 1 else ""))
    GOLDEN_PATH.write_text("{\n" + "\n".join(lines) + "\n }\n}\n")
    assert json.loads(GOLDEN_PATH.read_text()) == table
    print(f"wrote {len(table['balancers'])} balancers to {GOLDEN_PATH}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regenerate", action="store_true", help=f"rewrite {GOLDEN_PATH.name}")
    args = parser.parse_args()
    if not args.regenerate:
        parser.print_help()
        sys.exit(2)
    regenerate()
