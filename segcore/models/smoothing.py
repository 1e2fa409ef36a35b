"""The fast smoothing lane: repeated 3x3 neighbour averaging of cluster probability maps.

Per pass, ``p <- (1 - alpha) * p + alpha * avg3x3(p)`` where ``avg3x3`` is the plain mean of the 3x3
neighbourhood after replicate-padding by one pixel (``np.pad(..., mode="edge")``), i.e. every output
pixel averages exactly 9 values. After ``iters`` passes, ``p`` is renormalised to sum to 1 over
``K`` (``p / max(sum_k p, 1e-12)``). No parameters, no randomness.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def avg3x3(p: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` -> ``(B, C, h, w)`` replicate-padded 3x3 mean."""
    return F.avg_pool2d(F.pad(p, (1, 1, 1, 1), mode="replicate"), kernel_size=3, stride=1)


class FastSmoothing(nn.Module):
    """``probs (B, K, h, w)`` -> smoothed ``(B, K, h, w)``; ``iters=0`` or ``alpha=0`` is the identity."""

    def __init__(self, iters: int = 2, alpha: float = 0.5):
        super().__init__()
        if iters < 0 or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"need iters >= 0 and 0 <= alpha <= 1, got iters={iters}, alpha={alpha}")
        self.iters, self.alpha = iters, alpha

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        if self.iters == 0 or self.alpha == 0.0:
            return probs
        p = probs
        for _ in range(self.iters):
            p = (1.0 - self.alpha) * p + self.alpha * avg3x3(p)  # (B, K, h, w)
        return p / p.sum(dim=1, keepdim=True).clamp_min(1e-12)
