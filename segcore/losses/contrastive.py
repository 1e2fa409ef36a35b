"""Superpixel contrastive loss across the two views (region-level InfoNCE).

Both views' embeddings are brought back to the canonical crop frame; each superpixel's embedding is
pooled (mean over its valid stride-4 pixels, then L2-normalised) in view A and in view B. A
superpixel's A-embedding must pick out its own B-embedding among every superpixel of the batch:

    loss = 0.5 * (CE(A @ B.T / tau, diag) + CE(B @ A.T / tau, diag))

The views differ by geometry and photometry (brightness, contrast, saturation, noise, smooth
illumination gain), so the embedding learns to describe a region by what survives those changes
(texture, structure, hue) rather than by its exact brightness. Superpixels (SLIC) make the units
coherent regions, so the cost is a few hundred pooled vectors per batch, not one per pixel.

With ``neighbours = n > 0`` the target of each superpixel is no longer its own other view alone:
half of it goes to the ``n`` superpixels of the batch's *other* images nearest to it in the current
embedding (cosine of the two views' mean, no gradient), so regions that already look alike across
images are pulled together instead of being pushed apart as negatives (nearest-neighbour positives,
as in NNCLR / mean-shift self-supervision).

:mod:`segcore.losses.descriptor_affinity` pools the same way (:func:`pool_superpixels`) to distil
descriptor similarities between superpixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segcore.augment import invert_geom

MAX_SEGMENTS = 4096  # superpixel ids per image in the pooled keys


def pool_superpixels(
    embed: torch.Tensor, slic: torch.Tensor, max_segments: int = MAX_SEGMENTS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean embedding of every (image, superpixel) pair present.

    Args:
        embed: ``(B, E, h, w)`` embeddings.
        slic: ``(B, h, w)`` int64 superpixel ids at the same resolution; 0 = none.

    Returns:
        ``pooled (N, E)`` unnormalised means and ``keys (N,)`` int64 ``b * max_segments + id`` (sorted).
    """
    b, e, _h, _w = embed.shape
    keys = torch.arange(b, device=slic.device).view(b, 1, 1) * max_segments + slic.clamp_max(max_segments - 1)
    keys = torch.where(slic > 0, keys, torch.full_like(keys, -1)).reshape(-1)  # (B*h*w,)
    uniq, inverse = torch.unique(keys, return_inverse=True)
    flat = embed.permute(0, 2, 3, 1).reshape(-1, e)  # (B*h*w, E)
    sums = torch.zeros(len(uniq), e, dtype=flat.dtype, device=flat.device).index_add_(0, inverse, flat)
    counts = torch.bincount(inverse, minlength=len(uniq)).clamp_min(1).to(flat.dtype)
    pooled, keep = sums / counts[:, None], uniq >= 0
    return pooled[keep], uniq[keep]


def pool_views(
    embed_a: torch.Tensor, embed_b: torch.Tensor, slic_a: torch.Tensor, geom_a: torch.Tensor, geom_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Both views' embeddings brought back to the canonical crop frame and pooled over view A's
    superpixels: ``pooled_a (N, E)``, ``pooled_b (N, E)`` (unnormalised, row i = the same region)
    and ``keys (N,)`` as :func:`pool_superpixels` gives them."""
    slic = invert_geom(slic_a, geom_a)  # (B, h, w)
    pa, keys = pool_superpixels(invert_geom(embed_a, geom_a), slic)
    pb, _keys_b = pool_superpixels(invert_geom(embed_b, geom_b), slic)
    return pa, pb, keys


def superpixel_infonce(
    embed_a: torch.Tensor,
    embed_b: torch.Tensor,
    slic_a: torch.Tensor,
    geom_a: torch.Tensor,
    geom_b: torch.Tensor,
    tau: float = 0.25,
    neighbours: int = 0,
) -> torch.Tensor:
    """Symmetric InfoNCE between the two views' superpixel embeddings (see module docstring).

    Args:
        embed_a, embed_b: ``(B, E, h, w)`` stride-4 embeddings of views A and B.
        slic_a: ``(B, h, w)`` view A's superpixel ids at stride 4 (0 = invalid).
        geom_a, geom_b: ``(B, 3)`` geometry records of the views.
        tau: softmax temperature (``distill.contrast_tau``).
        neighbours: positives taken from the other images (``distill.contrast_neighbours``; 0: none).
    """
    pa, pb, keys = pool_views(embed_a, embed_b, slic_a, geom_a, geom_b)
    if len(keys) < 2:
        return embed_a.sum() * 0.0
    za, zb = F.normalize(pa.float(), dim=1), F.normalize(pb.float(), dim=1)
    logits = za @ zb.T / tau  # (N, N)
    if neighbours > 0:
        target = neighbour_targets(za, zb, keys, neighbours)
    else:
        target = torch.arange(len(keys), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


@torch.no_grad()
def neighbour_targets(za: torch.Tensor, zb: torch.Tensor, keys: torch.Tensor, n: int) -> torch.Tensor:
    """``(N, N)`` target rows: 0.5 on the superpixel itself and 0.5 / n on each of its ``n`` nearest
    superpixels of other images (``n`` is capped at what every row has; one image: the identity)."""
    z = F.normalize(za + zb, dim=1)
    image = keys // MAX_SEGMENTS
    eye = torch.eye(len(keys), dtype=z.dtype, device=z.device)
    n = min(n, len(keys) - int(torch.bincount(image).max()))
    if n <= 0:
        return eye
    sim = (z @ z.T).masked_fill(image[:, None] == image[None, :], float("-inf"))
    return (0.5 * eye).scatter_(1, sim.topk(n, dim=1).indices, 0.5 / n)
