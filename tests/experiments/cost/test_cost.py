"""``balancebench bench`` at tiny size: output columns and shape, pass counts, skips, files, CLI.

Timings are not asserted (only that they are positive numbers).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from balancers import list_balancers
from balancers._task_grads import CHUNK
from experiments import cost
from balancebench.main import main

TINY = {"input_dim": 4, "hidden": 8, "depth": 1, "batch_size": 8, "n_batches": 2}
KS = [2, 4]

#: (model forwards, backward traversals) per training step
PASSES = {
    "uniform": (1, 1), "fixed": (1, 1), "si": (1, 1), "rlw": (1, 1), "uw": (1, 1), "dwa": (1, 1),
    "famo[same_batch]": (2, 1), "famo[lagged]": (1, 1),
    "marigold[faithful]": (2, 2), "marigold[fused]": (2, 1),
    "marigold[faithful,two_point]": (3, 3), "marigold[fused,two_point]": (3, 2),
    # the trainer's forward and backward + one batched traversal for the K task gradients
    "mgda": (1, 2), "imtlg": (1, 2), "nashmtl": (1, 2),
    # issue 16: three loss-based balancers, then DB-MTL and the TorchJD-weighted references (O(K))
    "imtl_l": (1, 1), "gls": (1, 1), "stch": (1, 1),
    "dbmtl": (1, 2), "pcgrad": (1, 2), "cagrad": (1, 2), "upgrad": (1, 2), "aligned_mtl": (1, 2),
}


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return cost.bench(KS, repeats=2, steps_per_block=1, warmup=1, ok_repeats=1, options=TINY)


def test_columns_and_shape(table: pd.DataFrame) -> None:
    variants = cost.default_variants()
    assert list(table.columns) == cost.COLUMNS
    assert len(table) == len(KS) * len(variants)
    assert table.groupby("K").size().to_dict() == {k: len(variants) for k in KS}
    assert set(table["method"]) == {v.label for v in variants}
    assert (table["model"] == "mlp").all() and (table["device"] == "cpu").all()
    # every registered balancer is there, FAMO and MARIGOLD once per variant
    names = {v.name for v in variants}
    assert names == set(list_balancers())
    for col in ("time_ms", "uniform_ms", "time_ratio", "peak_mb", "mem_ratio", "balancer_passes_ms", "overhead_ms"):
        values = table[col].astype(float)
        assert values.map(math.isfinite).all(), col
        assert (values >= 0).all() if col in ("balancer_passes_ms", "overhead_ms") else (values > 0).all(), col
    # balancers that run the model themselves (closure, virtual step, task gradients) and those that do not
    passes = table.set_index(["K", "method"])["balancer_passes_ms"]
    for method in ("famo[same_batch]", "marigold[faithful]", "marigold[fused]", "mgda"):
        assert (passes.xs(method, level="method") > 0).all(), method
    for method in ("uniform", "famo[lagged]", "dwa"):
        assert (passes.xs(method, level="method") == 0).all(), method


def test_pass_counts(table: pd.DataFrame) -> None:
    assert set(PASSES) == set(table["method"])
    for _, row in table.iterrows():
        fwd, bwd = PASSES[row["method"]]
        assert (row["fwd"], row["bwd"]) == (fwd, bwd), row["method"]
        o_k = row["method"] in ("mgda", "imtlg", "nashmtl", "dbmtl", "pcgrad", "cagrad", "upgrad", "aligned_mtl")
        assert row["task_grads"] == (row["K"] if o_k else 0)


def test_uniform_matches_the_baseline_memory(table: pd.DataFrame) -> None:
    # the registered uniform balancer and the baseline run the same step on the same model
    assert (table.loc[table["method"] == "uniform", "mem_ratio"] == 1.0).all()
    faithful = table[table["method"] == "marigold[faithful]"]
    assert (faithful["mem_ratio"] > 1.0).all()  # the virtual parameters are counted


def test_o_k_methods_are_capped_and_chunked() -> None:
    chosen = cost.select_variants("uniform,mgda")
    frame = cost.bench([2, 3], repeats=1, steps_per_block=1, warmup=1, ok_max_k=2, variants=chosen, options=TINY)
    skipped = frame[(frame["method"] == "mgda") & (frame["K"] == 3)].iloc[0]
    assert "skipped" in skipped["note"] and pd.isna(skipped["time_ratio"])
    measured = frame[(frame["method"] == "mgda") & (frame["K"] == 2)].iloc[0]
    assert measured["note"] == "" and measured["bwd"] == 1 + math.ceil(2 / CHUNK)


def test_select_variants() -> None:
    labels = [v.label for v in cost.select_variants("famo,marigold[fused]")]
    assert labels == ["famo[same_batch]", "famo[lagged]", "marigold[fused]"]
    assert not any("two_point" in v.label for v in cost.default_variants(two_point=False))
    from experiments.errors import UserError

    with pytest.raises(UserError, match="nope"):
        cost.select_variants("nope")


def test_live_bytes_tracks_allocations_and_frees() -> None:
    mode = cost._LiveBytes()
    kept = torch.zeros(1000)  # 4000 bytes, adopted: freeing it counts
    mode.adopt([kept])
    with mode:
        a = torch.ones(2000)  # +8000
        b = a * 2  # +8000
        del a  # -8000
        view = b.view(-1)  # no new storage
        del kept  # -4000
        assert mode.live == 8000
    mode.stop()
    assert mode.peak == 4000 + 16000
    assert view.numel() == 2000


def test_overhead_probe_restores_everything() -> None:
    grad = torch.autograd.grad
    v = cost.select_variants("famo[same_batch]")[0]
    trainer = cost.build_trainer(v, 2, "mlp", "cpu", {**cost.MLP, **TINY})
    runner = cost.Runner(v, trainer, cost.load_batches(trainer, 2))
    own, passes = cost.balancer_overhead(runner, steps=2)
    assert own >= 0 and passes > 0  # FAMO same_batch's closure forward is a model pass
    assert torch.autograd.grad is grad
    assert "forward" not in vars(trainer.balancer) and "step" not in vars(trainer.balancer)
    assert "make" not in vars(trainer.closures)


def test_outputs_and_cli(tmp_path, capsys) -> None:
    out = tmp_path / "bench"
    rc = main(["bench", "--ks", "2,3", "--repeats", "1", "--steps-per-block", "1", "--warmup", "1",
               "--balancers", "uniform,famo[lagged],mgda", "--hidden", "8", "--depth", "1", "--batch-size", "8",
               "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "famo[lagged]" in printed and "time_ratio" in printed
    for suffix in ("csv", "md", "png"):
        assert (out / f"cost_mlp_cpu.{suffix}").is_file()
    frame = pd.read_csv(out / "cost_mlp_cpu.csv")
    assert list(frame.columns) == cost.COLUMNS and len(frame) == 2 * 3


@pytest.mark.parametrize("argv, message", [(["--ks", "1,2"], "K must be >= 2"), (["--ks", "a"], "integers"),
                                           (["--repeats", "0"], "--repeats")])
def test_cli_rejects_bad_arguments(argv, message, capsys) -> None:
    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err
