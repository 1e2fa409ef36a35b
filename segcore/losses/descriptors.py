"""Classical colour and texture descriptors of image regions: what the descriptor affinity distils.

For an image batch ``(B, 3, H, W)`` in 0..1, :func:`region_descriptors` returns six maps at stride 4
(``(B, 6, ceil(H/4), ceil(W/4))``, each the mean over its 4x4 cell), chosen so that each is cheap
and says something a land-cover class keeps while its exact shade changes:

==  ==================  ===================================================================
0   luminance           ``(R + G + B) / 3``
1   chroma r            ``R / (R + G + B)``: hue and saturation, blind to illumination
2   chroma g            ``G / (R + G + B)``
3   texture energy      Sobel magnitude of luminance / (local mean luminance + 0.05): furrows,
                        canopy and roof edges are high, meadows, water and tarmac are low
4   orientation         structure-tensor coherence ``sqrt((Jxx - Jyy)^2 + 4 Jxy^2) / (Jxx + Jyy)``
    coherence           over a 7 px window: one dominant direction (furrows, roads) is near 1,
                        blotches (canopy) and flat areas are low
5   fine energy         mean absolute Laplacian / (local mean luminance + 0.05): pixel-scale detail
==  ==================  ===================================================================

They are never learnt and never exported: the loss compares superpixels by them (see
:func:`segcore.losses.descriptor_affinity.descriptor_affinity`), and the student learns an embedding whose
similarities follow theirs and survive the two views' augmentations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segcore.models.student import STRIDE, pad_to_multiple

NUM_DESCRIPTORS = 6
_EPS = 1e-6


def _box(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over a ``size x size`` window, replicate padding; same shape as ``x (B, C, H, W)``."""
    r = size // 2
    return F.avg_pool2d(F.pad(x, (r, r, r, r), mode="replicate"), size, stride=1)


def region_descriptors(image: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` in 0..1 -> ``(B, 6, ceil(H/4), ceil(W/4))`` descriptor maps (module table)."""
    x = pad_to_multiple(image.float().clamp(0.0, 1.0))  # (B, 3, 4h, 4w)
    total = x.sum(1, keepdim=True)  # (B, 1, 4h, 4w)
    lum = total / 3.0
    chroma = x[:, :2] / (total + _EPS)  # (B, 2, 4h, 4w)
    padded = F.pad(lum, (1, 1, 1, 1), mode="replicate")
    sx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device) / 8.0
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=x.device) / 4.0
    kernels = torch.stack([sx, sx.T, lap])[:, None]  # (3, 1, 3, 3)
    gx, gy, laplacian = F.conv2d(padded, kernels).unbind(1)  # each (B, 4h, 4w)
    local = _box(lum, 9)[:, 0] + 0.05
    energy = (gx.square() + gy.square()).sqrt() / local
    fine = laplacian.abs() / local
    jxx, jyy, jxy = _box(torch.stack([gx * gx, gy * gy, gx * gy], 1), 7).unbind(1)
    coherence = ((jxx - jyy).square() + 4.0 * jxy.square()).sqrt() / (jxx + jyy + 1e-4)
    maps = torch.cat([lum, chroma, torch.stack([energy, coherence, fine], 1)], 1)  # (B, 6, 4h, 4w)
    return F.avg_pool2d(maps, STRIDE)
