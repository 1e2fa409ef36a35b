"""Label-free losses on cluster probabilities: two-view consistency, entropy shaping, smoothness.

Shapes: ``probs (B, K, h, w)`` at stride 4 (``h = ceil(H/4)``), summing to 1 over ``K``; masks
``(B, h, w)`` bool at stride 4 (see :func:`stride4_mask`). Every loss is a scalar averaged over
valid pixels; natural logarithms throughout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segcore.augment import invert_geom
from segcore.models.cluster_head import downsample_mask
from segcore.models.student import STRIDE, pad_to_multiple

EPS = 1e-8


def stride4_mask(valid: torch.Tensor | None, h: int, w: int) -> torch.Tensor | None:
    """``(B, H, W)`` full-resolution mask -> ``(B, h, w)`` by taking pixel ``[4i, 4j]`` (None stays None)."""
    return None if valid is None else downsample_mask(valid, h, w, STRIDE)


def stride4_image(image: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, ceil(H/4), ceil(W/4))``: replicate-pad, then mean of each 4x4 cell."""
    return F.avg_pool2d(pad_to_multiple(image.float()), STRIDE)


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values (B, h, w)`` over ``mask (B, h, w)`` (all pixels when None; 0 when none valid)."""
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def symmetric_kl(p: torch.Tensor, q: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``0.5 * (KL(p||q) + KL(q||p))`` per pixel over ``K``, averaged over valid pixels.

    Equals ``0.5 * sum_k (p_k - q_k) * (log p_k - log q_k)``; probabilities are clamped at 1e-8.
    """
    lp, lq = p.float().clamp_min(EPS).log(), q.float().clamp_min(EPS).log()
    per_pixel = 0.5 * ((p.float() - q.float()) * (lp - lq)).sum(dim=1)  # (B, h, w)
    return masked_mean(per_pixel, mask)


def consistency_loss(
    probs_a: torch.Tensor,
    probs_b: torch.Tensor,
    geom_a: torch.Tensor,
    geom_b: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric KL between two views' probabilities after mapping both back to the canonical frame.

    Args:
        probs_a, probs_b: ``(B, K, h, w)`` in each view's frame (both views assigned to the same
            prototypes, so cluster ``k`` means the same thing in both).
        geom_a, geom_b: ``(B, 3)`` int64 geometry records of the views (``segcore.augment``).
        mask: ``(B, h, w)`` valid pixels in the *canonical* frame.
    """
    return symmetric_kl(invert_geom(probs_a, geom_a), invert_geom(probs_b, geom_b), mask)


def entropy_loss(probs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean per-pixel entropy ``-sum_k p_k log p_k`` (minimised: confident assignments)."""
    p = probs.float()
    return masked_mean(-(p * p.clamp_min(EPS).log()).sum(dim=1), mask)


def marginal_loss(probs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``-H(mean p)``: negative entropy of each image's cluster marginal, averaged over the batch.

    Prototypes are fitted per image, so cluster ``k`` of one image is unrelated to cluster ``k`` of
    another: the marginal is taken per image (over its valid pixels). Minimised: every cluster used.
    Lies in ``[-log K, 0]``.
    """
    p = probs.float().flatten(2)  # (B, K, N)
    if mask is not None:
        m = mask.flatten(1).to(p.dtype)[:, None]  # (B, 1, N)
        marg = (p * m).sum(-1) / m.sum(-1).clamp_min(1.0)  # (B, K)
    else:
        marg = p.mean(-1)
    return (marg * marg.clamp_min(EPS).log()).sum(-1).mean()


def edge_weights(image_s4: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``exp(-|grad I| / sigma)`` between horizontal and vertical stride-4 neighbours.

    ``|grad I|`` is the mean over channels of the absolute difference of the stride-4 image
    (:func:`stride4_image`). Returns ``(B, h, w-1)`` and ``(B, h-1, w)``.
    """
    gx = (image_s4[..., :, 1:] - image_s4[..., :, :-1]).abs().mean(1)
    gy = (image_s4[..., 1:, :] - image_s4[..., :-1, :]).abs().mean(1)
    return torch.exp(-gx / sigma), torch.exp(-gy / sigma)


def edge_aware_diff(x: torch.Tensor, image: torch.Tensor, sigma: float, mask: torch.Tensor | None = None):
    """Edge-weighted mean L1 neighbour difference of a stride-4 map.

    Args:
        x: ``(B, C, h, w)`` map (probabilities or embeddings).
        image: ``(B, 3, H, W)`` image in 0..1, ``ceil(H/4) == h``.
        sigma: image-gradient scale; differences across an image edge of size ``sigma`` count ``1/e``.
        mask: ``(B, h, w)``; a pair counts only when both pixels are valid.

    Returns:
        ``sum w * |x_i - x_j|_1 / count`` over horizontal and vertical neighbour pairs (scalar).
    """
    wx, wy = edge_weights(stride4_image(image), sigma)
    dx = (x[..., :, 1:] - x[..., :, :-1]).float().abs().sum(1) * wx  # (B, h, w-1)
    dy = (x[..., 1:, :] - x[..., :-1, :]).float().abs().sum(1) * wy  # (B, h-1, w)
    if mask is None:
        return (dx.sum() + dy.sum()) / max(dx.numel() + dy.numel(), 1)
    mx, my = (mask[..., :, 1:] & mask[..., :, :-1]), (mask[..., 1:, :] & mask[..., :-1, :])
    return ((dx * mx).sum() + (dy * my).sum()) / (mx.sum() + my.sum()).clamp_min(1)


def smoothness_loss(probs: torch.Tensor, image: torch.Tensor, sigma: float, mask: torch.Tensor | None = None):
    """Edge-aware smoothness of ``probs (B, K, h, w)``: see :func:`edge_aware_diff`."""
    return edge_aware_diff(probs, image, sigma, mask)
