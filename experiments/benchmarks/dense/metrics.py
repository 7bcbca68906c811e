"""Losses and metrics of the dense NYU-v2 / CityScapes tasks, as the MTAN / FAMO / Nash-MTL code defines them.

Conventions of the reference code (FAMO and Nash-MTL ``experiments/nyuv2/{trainer,utils}.py``,
identical for CityScapes), kept here:

* **Valid pixels.** Depth: a pixel is valid where the target depth is non-zero. Normals: where the
  *sum of the three components* of the target normal is non-zero (the reference's
  ``sum(dim=1) != 0`` mask; a unit normal whose components sum to exactly 0 is therefore ignored).
  Segmentation: label ``-1`` is "unlabelled" and ignored (``ignore_index=-1``; the confusion matrix
  counts only labels in ``0..C-1``).
* **Losses.** Segmentation: pixel-wise cross-entropy with ``ignore_index=-1`` (the reference applies
  ``nll_loss`` to a ``log_softmax`` output; the same function). Depth: L1 summed over valid pixels /
  number of valid pixels. Normals: ``1 - sum(pred · target over valid pixels) / number of valid
  pixels`` with the prediction normalised to unit length per pixel.
* **Metrics.** mIoU and pixel accuracy from a confusion matrix accumulated over the whole split.
  Depth absolute / relative error, and the normal angle mean, median and the fractions of valid
  pixels within 11.25°, 22.5° and 30°, are computed per *batch* over that batch's valid pixels and
  then averaged over the batches of the split (the reference's ``avg_cost += cost / n_batches``;
  the median is the batch's median, ``np.median``, not the split's). Fractions (mIoU, pixel
  accuracy, within-t°) are in [0, 1], as the reference's ``BASE`` STL vector is.

Departures, only where the reference would produce NaN: a class that occurs neither in the targets
nor in the predictions of the split has no IoU and is left out of the mean (the reference's mean
would be NaN; on the real splits every class occurs); a batch without valid depth / normal pixels
contributes 0 instead of 0/0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: the reference's angle thresholds, degrees
ANGLE_THRESHOLDS = (11.25, 22.5, 30.0)
IGNORE_LABEL = -1


# ------------------------------------------------------------------------------------- masks
def depth_mask(target_Bx1xHxW: Tensor) -> Tensor:
    """(B,1,H,W) bool: valid depth pixels (target != 0)."""
    return target_Bx1xHxW.sum(dim=1, keepdim=True) != 0


def normal_mask(target_Bx3xHxW: Tensor) -> Tensor:
    """(B,1,H,W) bool: valid normal pixels (sum of the target's components != 0, as the reference)."""
    return target_Bx3xHxW.sum(dim=1, keepdim=True) != 0


def _count(mask: Tensor) -> Tensor:
    return mask.sum().clamp(min=1).to(torch.float32)


# ------------------------------------------------------------------------------------ losses
def segmentation_loss(logits_BxCxHxW: Tensor, labels_BxHxW: Tensor) -> Tensor:
    """Pixel-wise cross-entropy, label -1 ignored."""
    return F.cross_entropy(logits_BxCxHxW.float(), labels_BxHxW, ignore_index=IGNORE_LABEL)


def depth_loss(pred_Bx1xHxW: Tensor, target_Bx1xHxW: Tensor) -> Tensor:
    """Mean absolute error over the valid (non-zero target) pixels."""
    mask = depth_mask(target_Bx1xHxW)
    return ((pred_Bx1xHxW.float() - target_Bx1xHxW).abs() * mask).sum() / _count(mask)


def normal_loss(pred_Bx3xHxW: Tensor, target_Bx3xHxW: Tensor) -> Tensor:
    """1 − mean cosine between unit predicted and target normals over the valid pixels."""
    mask = normal_mask(target_Bx3xHxW)
    return 1.0 - (pred_Bx3xHxW.float() * target_Bx3xHxW * mask).sum() / _count(mask)


# ----------------------------------------------------------------------- per-batch metric parts
def confusion_counts(logits_BxCxHxW: Tensor, labels_BxHxW: Tensor) -> Tensor:
    """(C*C,) counts of (target class, predicted class) pairs, row-major by target; ignored labels skipped."""
    n = logits_BxCxHxW.shape[1]
    pred = logits_BxCxHxW.argmax(dim=1).flatten()
    target = labels_BxHxW.flatten().to(torch.int64)
    keep = (target >= 0) & (target < n)
    return torch.bincount(n * target[keep] + pred[keep], minlength=n * n)


def depth_errors(pred_Bx1xHxW: Tensor, target_Bx1xHxW: Tensor) -> Tensor:
    """(2,) the batch's mean absolute and mean relative (|p − t| / t) error over valid pixels."""
    mask = depth_mask(target_Bx1xHxW)
    pred, target = pred_Bx1xHxW.float()[mask], target_Bx1xHxW.float()[mask]
    diff = (pred - target).abs()
    n = _count(mask)
    return torch.stack([diff.sum() / n, (diff / target).sum() / n])


def median(values: Tensor) -> Tensor:
    """The median as ``np.median`` defines it (mean of the two middle values for an even count)."""
    n = values.numel()
    if n == 0:
        return values.new_zeros(())
    ordered = values.sort().values
    return 0.5 * (ordered[(n - 1) // 2] + ordered[n // 2])


def normal_errors(pred_Bx3xHxW: Tensor, target_Bx3xHxW: Tensor) -> Tensor:
    """(5,) the batch's angle error (degrees) mean, median and fractions below 11.25°, 22.5°, 30°."""
    mask = normal_mask(target_Bx3xHxW).squeeze(1)
    cosine = (pred_Bx3xHxW.float() * target_Bx3xHxW.float()).sum(dim=1)[mask]
    angles = torch.rad2deg(torch.acos(cosine.clamp(-1.0, 1.0)))
    if angles.numel() == 0:
        return angles.new_zeros(2 + len(ANGLE_THRESHOLDS))
    within = [(angles < t).float().mean() for t in ANGLE_THRESHOLDS]
    return torch.stack([angles.mean(), median(angles), *within])


# ------------------------------------------------------------------------- split-level values
def miou_and_pixel_accuracy(confusion_CxC: Tensor) -> Tensor:
    """(2,) mean IoU over the classes that occur (in targets or predictions) and pixel accuracy."""
    h = confusion_CxC.to(torch.float64)
    diag = h.diagonal()
    union = h.sum(dim=1) + h.sum(dim=0) - diag
    present = union > 0
    miou = (diag[present] / union[present]).mean() if bool(present.any()) else h.new_tensor(math.nan)
    total = h.sum()
    accuracy = diag.sum() / total if float(total) > 0 else h.new_tensor(math.nan)
    return torch.stack([miou, accuracy])
