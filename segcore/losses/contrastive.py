"""Superpixel contrastive loss across the two views (region-level InfoNCE).

Both views' embeddings are brought back to the canonical crop frame; each superpixel's embedding is
pooled (mean over its valid stride-4 pixels, then L2-normalised) in view A and in view B. A
superpixel's A-embedding must pick out its own B-embedding among every superpixel of the batch:

    loss = 0.5 * (CE(A @ B.T / tau, diag) + CE(B @ A.T / tau, diag))

The views differ by geometry and photometry (brightness, contrast, saturation, noise, smooth
illumination gain), so the embedding learns to describe a region by what survives those changes
(texture, structure, hue) rather than by its exact brightness. Superpixels (SLIC) make the units
coherent regions, so the cost is a few hundred pooled vectors per batch, not one per pixel.

:func:`descriptor_affinity` pools the same way and asks the cross-view similarities of every pair
of superpixels to follow the similarities of fixed colour/texture descriptors
(:mod:`segcore.losses.descriptors`), so that regions which look alike, here or in another image of
the batch, are embedded alike; the InfoNCE alone treats them as negatives and pushes them apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segcore.augment import invert_geom


def pool_superpixels(
    embed: torch.Tensor, slic: torch.Tensor, max_segments: int = 4096
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


def superpixel_infonce(
    embed_a: torch.Tensor,
    embed_b: torch.Tensor,
    slic_a: torch.Tensor,
    geom_a: torch.Tensor,
    geom_b: torch.Tensor,
    tau: float = 0.1,
) -> torch.Tensor:
    """Symmetric InfoNCE between the two views' superpixel embeddings (see module docstring).

    Args:
        embed_a, embed_b: ``(B, E, h, w)`` stride-4 embeddings of views A and B.
        slic_a: ``(B, h, w)`` view A's superpixel ids at stride 4 (0 = invalid).
        geom_a, geom_b: ``(B, 3)`` geometry records of the views.
        tau: softmax temperature.
    """
    canon_a = invert_geom(embed_a, geom_a)  # (B, E, h, w) canonical frame
    canon_b = invert_geom(embed_b, geom_b)
    slic = invert_geom(slic_a, geom_a)  # (B, h, w)
    pa, keys = pool_superpixels(canon_a, slic)
    pb, _keys_b = pool_superpixels(canon_b, slic)
    if len(keys) < 2:
        return embed_a.sum() * 0.0
    za, zb = F.normalize(pa.float(), dim=1), F.normalize(pb.float(), dim=1)
    logits = za @ zb.T / tau  # (N, N)
    target = torch.arange(len(keys), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def descriptor_affinity(
    embed_a: torch.Tensor,
    embed_b: torch.Tensor,
    slic_a: torch.Tensor,
    geom_a: torch.Tensor,
    geom_b: torch.Tensor,
    descriptors: torch.Tensor,
    bandwidth: float = 0.0,
) -> torch.Tensor:
    """MSE between the superpixels' cosine similarities across the views and their descriptor similarities.

    Superpixels are pooled as in :func:`superpixel_infonce`; the descriptors (view A's frame) are
    pooled the same way and standardised per column over the batch, giving ``d (N, C)``. The target
    similarity ``T_ij`` is the cosine ``d_i . d_j / (|d_i| |d_j|)`` when ``bandwidth`` is 0, else the
    Gaussian kernel ``exp(-mean_c (d_ic - d_jc)^2 / bandwidth)`` (1 for look-alikes, near 0 for
    regions far apart in any statistic; a kernel matrix, so unit vectors can realise it).
    Loss: ``mean_ij (za_i . zb_j - T_ij)^2``: the student's region geometry is distilled from the
    colour/texture statistics, and the cross-view pairing asks for it to survive augmentation.
    """
    canon_a = invert_geom(embed_a, geom_a)
    canon_b = invert_geom(embed_b, geom_b)
    slic = invert_geom(slic_a, geom_a)
    pa, keys = pool_superpixels(canon_a, slic)
    pb, _ = pool_superpixels(canon_b, slic)
    if len(keys) < 2:
        return embed_a.sum() * 0.0
    with torch.no_grad():
        d, _ = pool_superpixels(invert_geom(descriptors.float(), geom_a), slic)
        d = (d - d.mean(0)) / d.std(0, unbiased=False).clamp_min(1e-3)
        if bandwidth > 0:
            target = torch.exp(-torch.cdist(d, d).square() / d.shape[1] / bandwidth)
        else:
            t = F.normalize(d, dim=1)
            target = t @ t.T
    za, zb = F.normalize(pa.float(), dim=1), F.normalize(pb.float(), dim=1)
    return F.mse_loss(za @ zb.T, target)
