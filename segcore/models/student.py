"""The student encoder: one cheap stride-4 embedding path of VGG-style 3x3 conv blocks.

Inference path (what the numpy runtime reproduces), for an image ``x`` of shape ``(B, 3, H, W)``
with values in 0..1:

1. ``x = (x - mean) / std`` per channel with the fixed constants :data:`RGB_MEAN` / :data:`RGB_STD`
   (stored as buffers ``mean`` / ``std`` so the export records them).
2. Pad bottom/right to a multiple of 4 by *replicating* the last row/column
   (``np.pad(..., mode="edge")``), giving ``(B, 3, 4h, 4w)`` with ``h = ceil(H/4)``, ``w = ceil(W/4)``.
3. ``stem1``: conv3x3 stride 2, zero padding 1, ``3 -> width/2``, norm, ReLU.    ``(B, width/2, 2h, 2w)``
4. ``stem2``: conv3x3 stride 2, zero padding 1, ``width/2 -> width``, norm, ReLU. ``(B, width, h, w)``
5. ``blocks[i]`` (``depth`` of them): ``y = relu(norm(conv3x3(y)) + y)``, stride 1, dilation
   ``dilations[i]`` (default 1) with zero padding of the same size. Dilated blocks widen the context
   each embedding sees (land cover is defined over tens of metres) at no extra cost.
6. ``centre``: per-channel centring and scaling over the image, GroupNorm(width, width, eps=1e-5,
   no affine), i.e. ``(x - mean_hw) / sqrt(var_hw + eps)`` per channel.
7. ``out``: conv1x1 ``width -> embed_dim``, *no bias*. ``(B, embed_dim, h, w)``

Steps 6-7 make the raw embeddings zero-mean over each image, so they cannot all collapse onto one
direction (a collapse the clustering losses otherwise reach within a few dozen steps).

Every conv has a bias; ``norm`` is GroupNorm(groups, eps=1e-5, affine) or BatchNorm2d (eval: running
statistics, eps=1e-5). GroupNorm normalises over the whole image, so its statistics depend on the
tile that is run; BatchNorm in eval mode is a per-pixel affine map and does not.

The stride-4 blocks run at ``width`` channels rather than ``embed_dim`` to keep the cost near
0.65 GFLOP per 256x256 image (see :func:`flops_per_image`); the final 1x1 conv lifts to ``embed_dim``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: ImageNet RGB mean / std for images scaled to 0..1 (the usual constants; also what DINOv2 expects).
RGB_MEAN = (0.485, 0.456, 0.406)
RGB_STD = (0.229, 0.224, 0.225)

#: Output stride of the student (and of every stride-4 map in segcore).
STRIDE = 4


def make_norm(kind: str, channels: int, groups: int) -> nn.Module:
    """``"group"`` -> GroupNorm(min(groups, channels) dividing channels), ``"batch"`` -> BatchNorm2d."""
    if kind == "group":
        g = math.gcd(groups, channels)
        return nn.GroupNorm(g, channels, eps=1e-5)
    if kind == "batch":
        return nn.BatchNorm2d(channels, eps=1e-5)
    raise KeyError(f"unknown norm {kind!r}; valid norms: group, batch")


class ConvNormAct(nn.Module):
    """conv3x3 (zero padding = dilation, bias) -> norm -> ReLU, optionally residual (``relu(norm(conv(x)) + x)``)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str, groups: int, residual: bool = False,
                 dilation: int = 1):
        super().__init__()
        if residual and (in_ch != out_ch or stride != 1):
            raise ValueError("a residual block needs in_ch == out_ch and stride 1")
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=True)
        self.norm = make_norm(norm, out_ch, groups)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv(x))
        if self.residual:
            y = y + x
        return F.relu(y)


def pad_to_multiple(x: torch.Tensor, multiple: int = STRIDE) -> torch.Tensor:
    """Replicate-pad ``(B, C, H, W)`` on the bottom/right to ``(B, C, ceil(H/m)*m, ceil(W/m)*m)``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


class StudentEmbeddingNet(nn.Module):
    """``(B, 3, H, W)`` image in 0..1 -> ``(B, embed_dim, ceil(H/4), ceil(W/4))`` raw embeddings.

    Any input size works (the same weights at 256, 512, 1024 or 203x317): the input is
    replicate-padded to a multiple of 4 first. Embeddings are *not* normalised here.
    """

    def __init__(
        self,
        in_ch: int = 3,
        width: int = 48,
        embed_dim: int = 96,
        depth: int = 3,
        norm: str = "group",
        groups: int = 8,
        dilations: tuple[int, ...] = (),
    ):
        super().__init__()
        dilations = tuple(dilations) or (1,) * depth
        if len(dilations) != depth or min(dilations) < 1:
            raise ValueError(f"dilations={dilations} must give one dilation >= 1 per block (depth={depth})")
        if in_ch != len(RGB_MEAN):
            raise ValueError(f"the student takes RGB images (in_ch=3), got in_ch={in_ch}")
        if width < 2 or width % 2:
            raise ValueError(f"width must be an even number >= 2, got {width}")
        self.in_ch, self.width, self.embed_dim, self.depth, self.dilations = in_ch, width, embed_dim, depth, dilations
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(RGB_STD).view(1, 3, 1, 1))
        self.stem1 = ConvNormAct(in_ch, width // 2, stride=2, norm=norm, groups=groups)
        self.stem2 = ConvNormAct(width // 2, width, stride=2, norm=norm, groups=groups)
        self.blocks = nn.ModuleList(
            ConvNormAct(width, width, stride=1, norm=norm, groups=groups, residual=True, dilation=d) for d in dilations
        )
        self.centre = nn.GroupNorm(width, width, eps=1e-5, affine=False)
        self.out = nn.Conv2d(width, embed_dim, 1, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std  # (B, 3, H, W)
        x = pad_to_multiple(x)  # (B, 3, 4h, 4w)
        x = self.stem1(x)  # (B, width/2, 2h, 2w)
        x = self.stem2(x)  # (B, width, h, w)
        for block in self.blocks:
            x = block(x)  # (B, width, h, w)
        return self.out(self.centre(x))  # (B, E, h, w), zero mean over each image


def conv_macs(conv: nn.Conv2d, out_h: int, out_w: int) -> int:
    """Multiply-accumulates of one conv producing an ``out_h x out_w`` map (bias not counted)."""
    kh, kw = conv.kernel_size
    return out_h * out_w * conv.out_channels * (conv.in_channels // conv.groups) * kh * kw


def flops_per_image(model: StudentEmbeddingNet, h: int, w: int) -> dict[str, int]:
    """Hand count of the student's conv cost for one ``h x w`` image.

    Returns ``{"macs": ..., "flops": 2 * macs}``; norms, ReLUs and residual adds are left out
    (they are a few operations per activation, under 2% of the total).
    """
    h4, w4 = -(-h // STRIDE), -(-w // STRIDE)
    macs = conv_macs(model.stem1.conv, 2 * h4, 2 * w4) + conv_macs(model.stem2.conv, h4, w4)
    macs += sum(conv_macs(b.conv, h4, w4) for b in model.blocks)
    macs += conv_macs(model.out, h4, w4)
    return {"macs": macs, "flops": 2 * macs}
