"""The monolithic segmenter: student -> (projection) -> soft k-means head -> (refiner) -> smoothing.

Inference path for ``images (B, 3, H, W)`` in 0..1 (no randomness anywhere):

1. ``raw = student(images)``                          ``(B, E_s, h, w)``, ``h = ceil(H/4)``
2. ``raw = proj(raw)`` if present (1x1 conv, bias)    ``(B, E, h, w)``
3. ``embed = raw / max(||raw||_2 over E, 1e-12)``
4. ``logits, prototypes = head(embed, k, prototypes, valid)`` (see :mod:`segcore.models.cluster_head`)
5. ``logits = refiner(logits, embed)`` if present
6. ``probs = smoothing(softmax(logits over K))`` if smoothing is present
7. ``labels``: ``probs`` upsampled by exactly 4 with bilinear interpolation, ``align_corners=False``
   (source coordinate ``(i + 0.5) / 4 - 0.5``, clamped to ``[0, h - 1]``), to ``(4h, 4w)``, cropped to
   the top-left ``(H, W)`` (the student padded bottom/right), then ``argmax`` over ``K`` (first max
   wins on ties).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segcore.models.cluster_head import EPS, SoftKMeansHead
from segcore.models.refiner import Refiner
from segcore.models.smoothing import FastSmoothing
from segcore.models.student import STRIDE, StudentEmbeddingNet


def upsample_labels(probs: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """``probs (B, K, h, w)`` -> ``labels (B, out_h, out_w)`` int64 (step 7 of the module docstring)."""
    h, w = probs.shape[-2:]
    up = F.interpolate(probs.float(), size=(STRIDE * h, STRIDE * w), mode="bilinear", align_corners=False)
    return up[:, :, :out_h, :out_w].argmax(dim=1)


class MonolithicSegmenter(nn.Module):
    """Named parts: ``student``, optional ``proj``, ``head``, optional ``refiner``, optional ``smoothing``."""

    def __init__(
        self,
        student: StudentEmbeddingNet,
        head: SoftKMeansHead,
        smoothing: FastSmoothing | None = None,
        refiner: Refiner | None = None,
        proj: nn.Conv2d | None = None,
    ):
        super().__init__()
        self.student, self.head, self.smoothing, self.refiner, self.proj = student, head, smoothing, refiner, proj
        self.embed_dim = proj.out_channels if proj is not None else student.embed_dim

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in 0..1 -> L2-normalised embeddings ``(B, E, ceil(H/4), ceil(W/4))``."""
        raw = self.student(images)  # (B, E_s, h, w)
        if self.proj is not None:
            raw = self.proj(raw)  # (B, E, h, w)
        return F.normalize(raw, dim=1, eps=EPS)

    def forward(
        self,
        images: torch.Tensor,
        k: int | None = None,
        prototypes: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Segment a batch.

        Args:
            images: ``(B, 3, H, W)`` RGB in 0..1.
            k: clusters (``1..head.max_k``, default ``max_k``); ignored with ``prototypes``.
            prototypes: optional ``(B or 1, K, E)`` prototypes to assign to instead of fitting.
            valid: optional ``(B, H, W)`` bool; invalid pixels do not shape the prototypes.

        Returns:
            ``embed (B, E, h, w)``, ``logits (B, K, h, w)``, ``probs (B, K, h, w)``,
            ``prototypes (B, K, E)``, ``labels (B, H, W)`` int64.
        """
        embed = self.embed(images)  # (B, E, h, w)
        head = self.head(embed, k=k, prototypes=prototypes, valid=valid)
        logits = head["logits"]  # (B, K, h, w)
        if self.refiner is not None:
            logits = self.refiner(logits, embed)
        probs = torch.softmax(logits, dim=1)  # (B, K, h, w)
        if self.smoothing is not None:
            probs = self.smoothing(probs)
        with torch.no_grad():
            labels = upsample_labels(probs.detach(), images.shape[-2], images.shape[-1])  # (B, H, W)
        return {"embed": embed, "logits": logits, "probs": probs, "prototypes": head["prototypes"], "labels": labels}
