"""SLIC boundary priors on stride-4 embeddings, and edge-aware total variation.

Superpixel ids ``slic (B, H, W)`` int64 come at full resolution (``1..S``, 0 = no superpixel /
invalid, always ignored). At stride 4 a cell takes the id of pixel ``[4i, 4j]`` (:func:`stride4_ids`),
the same rule as the valid masks. Embeddings ``(B, E, h, w)`` are L2-normalised.

* **pull**: ``1 - cos(z_i, m_s(i))`` where ``m_s`` is the normalised mean embedding of ``i``'s
  superpixel: embeddings inside a superpixel agree.
* **push**: for superpixels ``a, b`` adjacent at stride 4, ``relu(cos(m_a, m_b) - margin) * e_ab``
  with an edge strength ``e_ab`` in 0..1 that is large when the two differ in mean colour *or* in
  texture (the std of intensity inside each superpixel, measured at full resolution): some
  land-cover classes share a colour and differ only in texture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segcore.losses.unsupervised import EPS, edge_aware_diff
from segcore.models.student import STRIDE


def stride4_ids(slic: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(B, H, W)`` ids -> ``(B, h, w)`` by taking pixel ``[4i, 4j]`` (nearest, no averaging)."""
    return slic[:, ::STRIDE, ::STRIDE][:, :h, :w].long()


def segment_sums(values: torch.Tensor, ids: torch.Tensor, n_seg: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-segment sums and counts. ``values (B, C, N)``, ``ids (B, N)`` -> ``(B, n_seg, C)``, ``(B, n_seg)``."""
    b, c, _ = values.shape
    sums = values.new_zeros(b, n_seg, c).scatter_add_(1, ids[..., None].expand(-1, -1, c), values.transpose(1, 2))
    counts = values.new_zeros(b, n_seg).scatter_add_(1, ids, torch.ones_like(ids, dtype=values.dtype))
    return sums, counts


def segment_mean_embeddings(embed: torch.Tensor, ids4: torch.Tensor, n_seg: int) -> torch.Tensor:
    """Normalised mean embedding per superpixel: ``(B, E, h, w)``, ``(B, h, w)`` -> ``(B, n_seg, E)``."""
    sums, _ = segment_sums(embed.float().flatten(2), ids4.flatten(1), n_seg)
    return F.normalize(sums, dim=-1, eps=EPS)


def slic_pull_loss(embed: torch.Tensor, slic: torch.Tensor) -> torch.Tensor:
    """Mean over pixels with id > 0 of ``1 - cos(z_i, m_s(i))``; 0 when no pixel has a superpixel."""
    ids4 = stride4_ids(slic, *embed.shape[-2:])  # (B, h, w)
    n_seg = int(ids4.max()) + 1
    means = segment_mean_embeddings(embed, ids4, n_seg)  # (B, S, E)
    flat_ids = ids4.flatten(1)  # (B, N)
    m_i = torch.gather(means, 1, flat_ids[..., None].expand(-1, -1, means.shape[-1]))  # (B, N, E)
    cos = (embed.float().flatten(2).transpose(1, 2) * m_i).sum(-1)  # (B, N)
    keep = (flat_ids > 0).float()
    return ((1.0 - cos) * keep).sum() / keep.sum().clamp_min(1.0)


def superpixel_stats(image: torch.Tensor, slic: torch.Tensor, n_seg: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean colour ``(B, n_seg, 3)`` and std of intensity ``(B, n_seg)`` of each superpixel, at full resolution.

    Intensity is the mean of the three channels; ``image (B, 3, H, W)`` in 0..1.
    """
    img = image.detach().float().flatten(2)  # (B, 3, HW)
    inten = img.mean(1, keepdim=True)  # (B, 1, HW)
    ids = slic.long().flatten(1).clamp(max=n_seg - 1)
    sums, counts = segment_sums(torch.cat([img, inten, inten.square()], 1), ids, n_seg)  # (B, S, 5)
    mean = sums / counts.clamp_min(1.0)[..., None]
    var = (mean[..., 4] - mean[..., 3].square()).clamp_min(0.0)
    return mean[..., :3], var.sqrt()


def edge_strength(
    colour_a: torch.Tensor,
    colour_b: torch.Tensor,
    std_a: torch.Tensor,
    std_b: torch.Tensor,
    colour_scale: float = 0.1,
    texture_scale: float = 0.03,
) -> torch.Tensor:
    """``1 - exp(-((|c_a - c_b|_2 / colour_scale)^2 + (|s_a - s_b| / texture_scale)^2))``, in 0..1.

    ``colour_* (P, 3)`` mean RGB in 0..1, ``std_* (P,)`` intensity std. A colour step of
    ``colour_scale`` or a texture step of ``texture_scale`` alone gives ``1 - 1/e = 0.63``.
    """
    dc = (colour_a - colour_b).norm(dim=-1) / colour_scale
    dt = (std_a - std_b).abs() / texture_scale
    return 1.0 - torch.exp(-(dc.square() + dt.square()))


def adjacent_pairs(ids4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unique adjacent superpixel pairs at stride 4 (4-neighbourhood, both ids > 0, ``a < b``).

    ``ids4 (B, h, w)`` -> ``(batch, a, b)``, each ``(P,)`` int64, sorted by ``(batch, a, b)``.
    """
    n = int(ids4.max()) + 1
    bidx = torch.arange(ids4.shape[0], device=ids4.device)[:, None, None]
    keys = []
    for u, v in ((ids4[:, :, 1:], ids4[:, :, :-1]), (ids4[:, 1:, :], ids4[:, :-1, :])):
        keep = (u != v) & (u > 0) & (v > 0)
        lo, hi = torch.minimum(u, v), torch.maximum(u, v)
        keys.append(((bidx.expand_as(u) * n + lo) * n + hi)[keep])
    key = torch.unique(torch.cat(keys))
    return key // (n * n), (key // n) % n, key % n


def slic_push_loss(
    embed: torch.Tensor,
    slic: torch.Tensor,
    image: torch.Tensor,
    margin: float,
    colour_scale: float = 0.1,
    texture_scale: float = 0.03,
) -> torch.Tensor:
    """Mean over adjacent superpixel pairs of ``relu(cos(m_a, m_b) - margin) * e_ab`` (0 if no pair).

    ``embed (B, E, h, w)``, ``slic (B, H, W)``, ``image (B, 3, H, W)`` in 0..1.
    """
    ids4 = stride4_ids(slic, *embed.shape[-2:])
    bi, a, b = adjacent_pairs(ids4)
    if bi.numel() == 0:
        return embed.float().sum() * 0.0
    n_seg = int(ids4.max()) + 1
    means = segment_mean_embeddings(embed, ids4, n_seg)  # (B, S, E)
    colour, std = superpixel_stats(image, slic, n_seg)
    strength = edge_strength(colour[bi, a], colour[bi, b], std[bi, a], std[bi, b], colour_scale, texture_scale)
    cos = (means[bi, a] * means[bi, b]).sum(-1)  # (P,)
    return (F.relu(cos - margin) * strength).mean()


def edge_aware_tv(embed: torch.Tensor, image: torch.Tensor, sigma: float, mask: torch.Tensor | None = None):
    """Edge-aware total variation of ``embed (B, E, h, w)``: :func:`segcore.losses.unsupervised.edge_aware_diff`."""
    return edge_aware_diff(embed, image, sigma, mask)
