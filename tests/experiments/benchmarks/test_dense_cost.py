"""``balancebench bench --model segnet``: the cost benchmark runs the MTAN SegNet trainer (seed 004 Table 3's model)."""

from __future__ import annotations

import pytest

from experiments import cost

NARROW = {"filters": [4, 8, 8, 16, 16], "n_batches": 2}  # keeps a CPU run short; images keep the releases' size


@pytest.mark.parametrize("model, k, shape", [("segnet", 3, (2, 3, 288, 384)), ("segnet_cityscapes", 2, (8, 3, 128, 256))])
def test_segnet_cost_trainer_has_the_reference_batch(model: str, k: int, shape: tuple) -> None:
    options = {**cost.SEGNET[model], **NARROW}
    trainer = cost.build_trainer(cost.Variant("famo", "famo"), k, model, "cpu", options)
    assert trainer.bench.n_tasks == k and trainer.bench.name == cost.SEGNET[model]["benchmark"]
    batches = cost.load_batches(trainer, 2)
    assert len(batches) == 2 and tuple(batches[0][0].shape) == shape
    trainer.train_step(batches[0])
    assert trainer.step_count == 1


@pytest.mark.slow
def test_segnet_cost_rows_for_nyu_and_cityscapes() -> None:
    chosen = cost.select_variants("famo,mgda")
    for model, k in (("segnet", 3), ("segnet_cityscapes", 2)):
        # what is counted per step does not depend on the image size: small images (multiples of 32) keep it short
        small = {"segnet": [64, 96], "segnet_cityscapes": [32, 64]}[model]
        frame = cost.bench([99], model=model, repeats=1, steps_per_block=1, warmup=1, ok_repeats=1, variants=chosen,
                           options={**NARROW, "resize": small})
        assert set(frame["K"]) == {k}  # the model fixes K; the ks argument is ignored
        rows = frame.set_index("method")
        assert rows.loc["mgda", "task_grads"] == k and rows.loc["famo[same_batch]", "task_grads"] == 0
        assert rows.loc["famo[same_batch]", "fwd"] == 2 and rows.loc["mgda", "time_ms"] > 0
