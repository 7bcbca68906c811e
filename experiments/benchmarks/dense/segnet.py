"""The SegNet encoder–decoder of the MTAN / FAMO / Nash-MTL dense benchmarks: the split baseline and MTAN.

Both architectures follow the reference code (``experiments/nyuv2/models.py`` of FAMO and Nash-MTL,
after Liu et al.'s MTAN release), written anew; ``filters`` defaults to the reference's
``(64, 128, 256, 512, 512)``.

Shared encoder–decoder (both architectures). ``conv(a, b)`` is Conv3×3(a→b, padding 1) + BatchNorm +
ReLU. Five encoder levels ``L = 0..4``: ``e0 = enc_in[L](x)``, ``e1 = enc_conv[L](e0)`` (one conv at
levels 0–1, two at 2–4), then 2×2 max-pooling with indices. Five decoder levels from ``L = 4`` down to
0: max-unpooling with level ``L``'s indices, ``d0 = dec_in[L](·)`` (f[L]→f[L-1], f[0]→f[0] at level 0),
``d1 = dec_conv[L](d0)`` (one conv at levels 0–1, two at 2–4).

* ``arch="split"`` (``SegNetSplit``, hard parameter sharing): every task reads the last decoder output.
* ``arch="mtan"`` (``SegNetMtan``, the reference codes' default ``--model mtan``): each task has its
  own soft-attention encoder and decoder. Encoder level ``L``: mask ``a = att_enc[t][L](e0 ⊕ prev)``
  (``e0`` alone at level 0), ``y = a · e1``, ``prev = maxpool(block_enc[L](y))``. Decoder level ``L``
  (4 down to 0): ``u = block_dec[L](upsample×2(prev))`` (bilinear, align_corners), mask
  ``a = att_dec[t][L](unpooled ⊕ u)``, ``prev = a · d1``. ``att(a, b, c)`` is Conv1×1 + BN + ReLU +
  Conv1×1 + BN + Sigmoid; ``block_enc`` / ``block_dec`` are ``conv`` layers shared by all tasks.

Parameter split (as the reference's ``shared_parameters()``: every parameter whose name does not
contain ``pred``): the *trunk* holds everything but the prediction layers, including MTAN's
per-task attention modules, so gradient methods see the same "shared" set as in the reference.
The *heads* are the reference's ``pred_task*``: Conv3×3(f0→f0) then Conv1×1(f0→out), no activation
between. The segmentation head outputs logits (the reference's ``log_softmax`` is folded into the
cross-entropy); the normal head divides by the per-pixel L2 norm. Initialisation: Xavier-normal
convolution weights, zero biases, BatchNorm weight 1 and bias 0.

Input height and width must be multiples of 32 (five 2×2 poolings); MTAN needs ``filters[3] ==
filters[4]`` (its deepest decoder attention takes ``2·f[4]`` channels where it expects
``f[4] + f[3]``, as in the reference).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from experiments.benchmarks.base import MultiTaskModel

REFERENCE_FILTERS = (64, 128, 256, 512, 512)
ARCHS = ("mtan", "split")


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def attention_block(c_in: int, c_mid: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_mid, 1), nn.BatchNorm2d(c_mid), nn.ReLU(inplace=True),
        nn.Conv2d(c_mid, c_out, 1), nn.BatchNorm2d(c_out), nn.Sigmoid(),
    )


def _repeat(c: int, times: int) -> nn.Sequential:
    return nn.Sequential(*(conv_block(c, c) for _ in range(times)))


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if getattr(getattr(m, "weight", None), "is_meta", False):
            continue  # no values on the meta device (used to count parameters); torch's meta normal_ is slow
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class SegNetTrunk(nn.Module):
    """Everything but the prediction layers; ``forward(x)`` returns one feature map (B, f0, H, W) per task."""

    def __init__(self, n_tasks: int, arch: str = "mtan", filters: Sequence[int] = REFERENCE_FILTERS) -> None:
        super().__init__()
        f = [int(c) for c in filters]
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
        if len(f) != 5 or min(f) < 1:
            raise ValueError(f"filters must be 5 positive channel counts, got {list(filters)}")
        if arch == "mtan" and f[3] != f[4]:
            raise ValueError(f"the MTAN SegNet needs filters[3] == filters[4], got {f}")
        self.n_tasks, self.arch, self.filters = int(n_tasks), arch, tuple(f)
        self.enc_in = nn.ModuleList([conv_block(3, f[0])] + [conv_block(f[i], f[i + 1]) for i in range(4)])
        self.enc_conv = nn.ModuleList([conv_block(f[0], f[0]), conv_block(f[1], f[1])]
                                      + [_repeat(f[i], 2) for i in (2, 3, 4)])
        self.dec_in = nn.ModuleList([conv_block(f[0], f[0])] + [conv_block(f[i + 1], f[i]) for i in range(4)])
        self.dec_conv = nn.ModuleList([conv_block(f[0], f[0]), conv_block(f[0], f[0])]
                                      + [_repeat(f[i], 2) for i in (1, 2, 3)])
        if arch == "mtan":
            self.att_enc = nn.ModuleList(
                nn.ModuleList([attention_block(f[0], f[0], f[0])]
                              + [attention_block(2 * f[i], f[i], f[i]) for i in range(1, 5)])
                for _ in range(self.n_tasks))
            self.att_dec = nn.ModuleList(
                nn.ModuleList([attention_block(2 * f[0], f[0], f[0])]
                              + [attention_block(f[i] + f[i - 1], f[i - 1], f[i - 1]) for i in range(1, 5)])
                for _ in range(self.n_tasks))
            self.block_enc = nn.ModuleList([conv_block(f[i], f[i + 1]) for i in range(4)] + [conv_block(f[4], f[4])])
            self.block_dec = nn.ModuleList([conv_block(f[0], f[0])] + [conv_block(f[i], f[i - 1]) for i in (1, 2, 3)]
                                           + [conv_block(f[4], f[4])])
        _init(self)

    def _shared(self, x: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Encoder (e0, e1 per level), unpooled inputs and decoder outputs (d1), decoder lists from level 4 down."""
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"SegNet input height and width must be multiples of 32, got {tuple(x.shape[-2:])}")
        e0s, e1s, indices = [], [], []
        h = x
        for level in range(5):
            e0 = self.enc_in[level](h)
            e1 = self.enc_conv[level](e0)
            h, idx = F.max_pool2d(e1, 2, 2, return_indices=True)
            e0s.append(e0)
            e1s.append(e1)
            indices.append(idx)
        unpooled, d1s = [], []
        for level in reversed(range(5)):
            up = F.max_unpool2d(h, indices[level], 2, 2)
            h = self.dec_conv[level](self.dec_in[level](up))
            unpooled.append(up)
            d1s.append(h)
        return e0s, e1s, unpooled, d1s

    def forward(self, x: Tensor) -> list[Tensor]:
        e0s, e1s, unpooled, d1s = self._shared(x)
        if self.arch == "split":
            return [d1s[-1]] * self.n_tasks
        return [self._attend(t, e0s, e1s, unpooled, d1s) for t in range(self.n_tasks)]

    def _attend(self, t: int, e0s: list[Tensor], e1s: list[Tensor], unpooled: list[Tensor], d1s: list[Tensor]) -> Tensor:
        prev: Tensor | None = None
        for level in range(5):
            source = e0s[level] if prev is None else torch.cat((e0s[level], prev), dim=1)
            attended = self.att_enc[t][level](source) * e1s[level]
            prev = F.max_pool2d(self.block_enc[level](attended), 2, 2)
        for step, level in enumerate(reversed(range(5))):
            up = F.interpolate(prev, scale_factor=2, mode="bilinear", align_corners=True)
            up = self.block_dec[level](up)
            mask = self.att_dec[t][level](torch.cat((unpooled[step], up), dim=1))
            prev = mask * d1s[step]
        assert prev is not None
        return prev


class DenseHead(nn.Module):
    """The reference's ``pred_task``: Conv3×3(f0→f0), Conv1×1(f0→out) on its task's feature map.

    ``normalize``: divide by the per-pixel L2 norm (surface normals).
    """

    def __init__(self, task: int, channels: int, out: int, normalize: bool = False) -> None:
        super().__init__()
        self.task, self.normalize = int(task), bool(normalize)
        self.pred = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.Conv2d(channels, out, 1))
        _init(self)

    def forward(self, features: list[Tensor]) -> Tensor:
        y = self.pred(features[self.task])
        return F.normalize(y, p=2, dim=1) if self.normalize else y


def build_segnet(outputs: Sequence[tuple[int, bool]], arch: str = "mtan",
                 filters: Sequence[int] = REFERENCE_FILTERS) -> MultiTaskModel:
    """A SegNet with one head per ``(out_channels, normalize)`` in ``outputs`` (trunk built first)."""
    trunk = SegNetTrunk(len(outputs), arch=arch, filters=filters)
    heads = [DenseHead(t, trunk.filters[0], out, normalize) for t, (out, normalize) in enumerate(outputs)]
    return MultiTaskModel(trunk, heads)
