"""Distillation and clustering-shaping losses on stride-4 embeddings.

Shapes: student embeddings ``(B, E, h, w)``, teacher features ``(B, D, h', w')`` (resampled to
``(h, w)`` here when they differ), probabilities ``(B, K, h, w)``, masks ``(B, h, w)`` bool.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segcore.losses.unsupervised import EPS, masked_mean


def resample_to(feats: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinear (``align_corners=False``) resize of ``(B, D, h', w')`` to ``(B, D, h, w)``; no-op if equal."""
    if feats.shape[-2:] == (h, w):
        return feats
    return F.interpolate(feats.float(), size=(h, w), mode="bilinear", align_corners=False)


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``1 - cos(student, teacher)`` per pixel, averaged over valid pixels.

    ``student (B, D, h, w)`` are the projected student embeddings (the 1x1 projection lives in the
    composite loss); ``teacher (B, D, h', w')`` is detached and resampled to ``(h, w)``.
    """
    t = resample_to(teacher.detach(), *student.shape[-2:])
    cos = F.cosine_similarity(student.float(), t.float(), dim=1, eps=EPS)  # (B, h, w)
    return masked_mean(1.0 - cos, mask)


def sample_pairs(
    mask: torch.Tensor | None, b: int, n: int, n_pairs: int, generator: torch.Generator | None, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, n_pairs)`` index pairs into the flattened ``n`` pixels, drawn from valid pixels.

    Pixels are drawn with replacement, uniformly over valid pixels (over all when none is valid).
    """
    weights = torch.ones(b, n) if mask is None else mask.reshape(b, n).float().cpu()
    weights[weights.sum(1) == 0] = 1.0
    idx = torch.multinomial(weights, 2 * n_pairs, replacement=True, generator=generator).to(device)
    return idx[:, :n_pairs], idx[:, n_pairs:]


def affinity_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    n_pairs: int,
    generator: torch.Generator | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """MSE between student and teacher cosine similarities of ``n_pairs`` sampled pixel pairs per image.

    ``student (B, E, h, w)``, ``teacher (B, D, h', w')`` (resampled to ``(h, w)``, detached); pairs
    come from ``generator`` (CPU), so the same generator state gives the same pairs.
    """
    b, _, h, w = student.shape
    t = resample_to(teacher.detach(), h, w)
    i, j = sample_pairs(mask, b, h * w, n_pairs, generator, student.device)
    s_flat = F.normalize(student.float().flatten(2), dim=1, eps=EPS)  # (B, E, N)
    t_flat = F.normalize(t.float().flatten(2), dim=1, eps=EPS)  # (B, D, N)

    def pair_cos(f: torch.Tensor) -> torch.Tensor:
        fi = torch.gather(f, 2, i[:, None].expand(-1, f.shape[1], -1))
        fj = torch.gather(f, 2, j[:, None].expand(-1, f.shape[1], -1))
        return (fi * fj).sum(1)  # (B, n_pairs)

    return F.mse_loss(pair_cos(s_flat), pair_cos(t_flat))


def sharpened_target(probs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """DEC target ``q_k ∝ p_k^2 / f_k`` with ``f_k`` = the image's soft cluster frequency; detached.

    ``probs (B, K, h, w)`` -> ``q (B, K, h, w)`` summing to 1 over ``K``.
    """
    p = probs.detach().float()
    m = torch.ones_like(p[:, :1]) if mask is None else mask[:, None].to(p.dtype)
    f = (p * m).sum(dim=(2, 3), keepdim=True).clamp_min(EPS)  # (B, K, 1, 1)
    q = p.square() / f
    return q / q.sum(dim=1, keepdim=True).clamp_min(EPS)


def cluster_loss(probs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy ``-sum_k q_k log p_k`` of ``probs`` against its sharpened target, over valid pixels."""
    q = sharpened_target(probs, mask)
    return masked_mean(-(q * probs.float().clamp_min(EPS).log()).sum(dim=1), mask)
