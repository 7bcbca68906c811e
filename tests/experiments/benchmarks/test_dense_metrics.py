"""Dense losses and metrics against hand-computed values (the MTAN / FAMO / Nash-MTL definitions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from experiments.benchmarks.dense import metrics as M


def _logits_for(pred_BxHxW: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Logits whose argmax is ``pred``."""
    return F.one_hot(pred_BxHxW, n_classes).permute(0, 3, 1, 2).float()


def test_miou_and_pixel_accuracy_by_hand() -> None:
    # targets (one row of 6 pixels, -1 ignored) and predictions, 3 classes
    target = torch.tensor([[[0, 0, 1, 1, 2, -1]]])
    pred = torch.tensor([[[0, 1, 1, 1, 0, 2]]])
    counts = M.confusion_counts(_logits_for(pred, 3), target).reshape(3, 3)
    # rows = target class, columns = predicted class; the ignored pixel is not counted
    assert counts.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    miou, acc = M.miou_and_pixel_accuracy(counts).tolist()
    # IoU_0 = 1 / (2 + 2 - 1) = 1/3, IoU_1 = 2 / (2 + 3 - 2) = 2/3, IoU_2 = 0 / (1 + 0 - 0) = 0
    assert miou == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert acc == pytest.approx(3 / 5)


def test_a_class_absent_from_targets_and_predictions_is_left_out_of_the_mean() -> None:
    target = torch.tensor([[[0, 1]]])
    pred = torch.tensor([[[0, 0]]])
    counts = M.confusion_counts(_logits_for(pred, 4), target).reshape(4, 4)
    miou, acc = M.miou_and_pixel_accuracy(counts).tolist()
    assert miou == pytest.approx((1 / 2 + 0) / 2)  # classes 2 and 3 never occur: not 0, not NaN
    assert acc == pytest.approx(0.5)


def test_depth_errors_mask_zero_targets() -> None:
    target = torch.tensor([2.0, 0.0, 4.0, 1.0]).reshape(1, 1, 2, 2)
    pred = torch.tensor([1.0, 9.0, 5.0, 1.5]).reshape(1, 1, 2, 2)
    abs_err, rel_err = M.depth_errors(pred, target).tolist()
    assert abs_err == pytest.approx((1 + 1 + 0.5) / 3)
    assert rel_err == pytest.approx((1 / 2 + 1 / 4 + 0.5 / 1) / 3)
    assert M.depth_loss(pred, target).item() == pytest.approx(abs_err)


def _unit(deg: float) -> list[float]:
    """The unit vector at ``deg`` degrees from +z in the x–z plane."""
    r = math.radians(deg)
    return [math.sin(r), 0.0, math.cos(r)]


def test_normal_errors_by_hand() -> None:
    angles = [0.0, 10.0, 20.0, 25.0, 40.0, 60.0]
    target = torch.tensor([_unit(0.0)] * 6 + [[0.0, 0.0, 0.0], [0.6, -0.6, 0.0]])  # last two: masked
    pred = torch.tensor([_unit(a) for a in angles] + [_unit(90.0), _unit(90.0)])
    as_map = lambda t: t.T.reshape(1, 3, 2, 4)  # noqa: E731  (8 pixels on a 2x4 map)
    mean, median, w11, w22, w30 = M.normal_errors(as_map(pred), as_map(target)).tolist()
    assert mean == pytest.approx(sum(angles) / 6, abs=1e-3)
    assert median == pytest.approx((20.0 + 25.0) / 2, abs=1e-3)  # even count: mean of the middle two
    assert (w11, w22, w30) == pytest.approx((2 / 6, 3 / 6, 4 / 6))
    # the reference's mask is "sum of components != 0": (0.6, -0.6, 0) is ignored although it is not zero
    assert M.normal_mask(as_map(target)).sum().item() == 6
    cos = [math.cos(math.radians(a)) for a in angles]
    assert M.normal_loss(as_map(pred), as_map(target)).item() == pytest.approx(1 - sum(cos) / 6, abs=1e-6)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_median_is_numpy_median(n: int) -> None:
    values = torch.randn(n, generator=torch.Generator().manual_seed(n))
    assert M.median(values).item() == pytest.approx(float(np.median(values.numpy())), abs=1e-6)


def test_segmentation_loss_ignores_unlabelled_pixels() -> None:
    logits = torch.tensor([[[[2.0, 0.0, 5.0]], [[0.0, 1.0, -5.0]]]])  # (1, 2 classes, 1, 3)
    labels = torch.tensor([[[0, 1, -1]]])
    expected = -(math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(math.e / (1 + math.e))) / 2
    assert M.segmentation_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_empty_masks_give_zero_not_nan() -> None:
    zeros = torch.zeros(1, 1, 2, 2)
    assert M.depth_loss(torch.ones(1, 1, 2, 2), zeros).item() == 0.0
    assert M.depth_errors(torch.ones(1, 1, 2, 2), zeros).tolist() == [0.0, 0.0]
    assert M.normal_errors(torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)).tolist() == [0.0] * 5
