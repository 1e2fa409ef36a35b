"""Descriptor affinity: superpixel similarities across the two views, distilled from colour/texture statistics.

Both views' embeddings are brought back to the canonical crop frame and pooled per superpixel (as
the superpixel InfoNCE does, :func:`segcore.losses.contrastive.pool_superpixels`). The fixed
descriptors of :mod:`segcore.losses.descriptors` (luminance, chromaticity, texture energy,
orientation coherence, fine energy) are pooled the same way, and the cross-view cosine similarity of
every pair of superpixels is asked to equal the descriptors' similarity. Regions that look alike,
here or in another image of the batch, are so embedded alike; the InfoNCE alone treats them as
negatives and pushes them apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segcore.augment import invert_geom
from segcore.losses.contrastive import pool_superpixels, pool_views


def descriptor_affinity(
    embed_a: torch.Tensor,
    embed_b: torch.Tensor,
    slic_a: torch.Tensor,
    geom_a: torch.Tensor,
    geom_b: torch.Tensor,
    descriptors: torch.Tensor,
    bandwidth: float = 1.0,
) -> torch.Tensor:
    """MSE between the superpixels' cosine similarities across the views and their descriptor similarities.

    Superpixels are pooled as in :func:`~segcore.losses.contrastive.superpixel_infonce`; the
    descriptors (view A's frame) are pooled the same way and standardised per column over the
    batch, giving ``d (N, C)``. The target similarity ``T_ij`` is the cosine
    ``d_i . d_j / (|d_i| |d_j|)`` when ``bandwidth`` is 0, else the Gaussian kernel
    ``exp(-mean_c (d_ic - d_jc)^2 / bandwidth)`` (1 for look-alikes, near 0 for regions far apart
    in any statistic; a kernel matrix, so unit vectors can realise it). ``bandwidth`` is
    ``distill.descriptor_bandwidth``.

    Loss: ``mean_ij (za_i . zb_j - T_ij)^2``: the student's region geometry is distilled from the
    colour/texture statistics, and the cross-view pairing asks for it to survive augmentation.
    """
    pa, pb, keys = pool_views(embed_a, embed_b, slic_a, geom_a, geom_b)
    if len(keys) < 2:
        return embed_a.sum() * 0.0
    with torch.no_grad():
        d, _ = pool_superpixels(invert_geom(descriptors.float(), geom_a), invert_geom(slic_a, geom_a))
        d = (d - d.mean(0)) / d.std(0, unbiased=False).clamp_min(1e-3)
        if bandwidth > 0:
            target = torch.exp(-torch.cdist(d, d).square() / d.shape[1] / bandwidth)
        else:
            t = F.normalize(d, dim=1)
            target = t @ t.T
    za, zb = F.normalize(pa.float(), dim=1), F.normalize(pb.float(), dim=1)
    return F.mse_loss(za @ zb.T, target)
