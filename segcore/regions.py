"""Region-level grouping of cluster probabilities, numpy only (no torch, no scikit-image).

Land-cover classes are defined over tens to hundreds of metres, while the network assigns every
stride-4 cell on its own. :func:`region_vote` groups cells into *regions* (SLIC-style superpixels on
the cell grid: local k-means on mean colour and position, seeded on a regular grid) and gives every
cell the mean cluster probabilities of its region: a soft majority vote that follows the image's
own edges only where they are strong: by default (``predict.region_compactness`` 0.4) regions are
nearly square, which measured better than colour-following ones (docs/benchmarks.md, "Region vote
size and shape").

The region side is given in ground units (``predict.region_m`` metres) and turned into cells
through the working resolution, so it means the same on a 10 cm drone chip and a 2 m satellite
scene. Seeds sit on a grid anchored to map coordinates (the raster's own cell grid when it has no
georeferencing), never to the tile, and every cell
only looks at the seeds of its own and the eight neighbouring grid blocks, so a tile computed with
a halo of a few region sides agrees with the whole-raster result away from the tile edge.

At the scale of a whole raster, :func:`class_prior` estimates the share of every class in the
raster (the maximum-likelihood class shares under the model's probabilities, by EM: Saerens et al.
2002, "Adjusting the outputs of a classifier to new a priori probabilities") and
:func:`apply_prior` reweights the probabilities by them, so a cell the model finds ambiguous goes
to the class the raster is mostly made of. The probabilities assume every class equally likely; a
scene of fields is not, and without the prior its fields split over several similar classes.
"""

from __future__ import annotations

import numpy as np

STRIDE = 4


def cell_colours(rgb: np.ndarray, cells: tuple[int, int]) -> np.ndarray:
    """Mean colour ``float32 (h, w, 3)`` in 0..1 of each 4x4 block of ``rgb (H, W, 3)`` uint8 (edge-padded)."""
    h, w = cells
    x = rgb.astype(np.float32) / 255.0
    x = np.pad(x, ((0, STRIDE * h - x.shape[0]), (0, STRIDE * w - x.shape[1]), (0, 0)), mode="edge")
    return x.reshape(h, STRIDE, w, STRIDE, 3).mean(axis=(1, 3))


def superpixels(colours: np.ndarray, side: float, origin: tuple[float, float] = (0, 0), compactness: float = 0.4,
                iters: int = 5) -> np.ndarray:
    """SLIC-style regions on a grid of cells; ``int64 (h, w)`` region ids (not necessarily contiguous).

    Args:
        colours: ``(h, w, C)`` cell features (mean colour in 0..1).
        side: region side in cells (seed spacing), at least 1.
        origin: global cell coordinates ``(row, col)`` of ``colours[0, 0]`` (may be fractional, e.g.
            map coordinates in cells): seeds lie on the global grid ``side * (i + 1/2)``, so
            overlapping windows and rasters share seeds.
        compactness: colour distance equivalent to one region side of spatial distance.
        iters: assignment/update rounds.
    """
    h, w = colours.shape[:2]
    side = max(1.0, float(side))
    rows = np.arange(h) + origin[0]
    cols = np.arange(w) + origin[1]
    bi0, bj0 = int(np.floor(rows[0] / side)), int(np.floor(cols[0] / side))
    bi = np.floor(rows / side).astype(np.int64) - bi0  # block of each cell, local block index
    bj = np.floor(cols / side).astype(np.int64) - bj0
    gh, gw = int(bi[-1]) + 1, int(bj[-1]) + 1
    # Seeds: block centres (global grid), colour of the cell nearest to each centre.
    cy = (np.arange(gh) + bi0 + 0.5) * side - 0.5 - origin[0]  # cell centres sit on integer indexes
    cx = (np.arange(gw) + bj0 + 0.5) * side - 0.5 - origin[1]
    sy = np.clip(np.round(cy).astype(np.int64), 0, h - 1)
    sx = np.clip(np.round(cx).astype(np.int64), 0, w - 1)
    centre_pos = np.stack(np.broadcast_arrays(cy[:, None], cx[None, :]), -1).reshape(-1, 2)  # (G, 2)
    centre_col = colours[sy[:, None], sx[None, :]].reshape(gh * gw, -1).astype(np.float64)  # (G, C)
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    feats = colours.reshape(h * w, -1).astype(np.float64)
    inv_c, inv_s = 1.0 / compactness**2, 1.0 / side**2
    labels = (bi[:, None] * gw + bj[None, :]).reshape(-1)
    for _ in range(max(1, iters)):
        best = np.full(h * w, np.inf)
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                ci = np.clip(bi + di, 0, gh - 1)[:, None]
                cj = np.clip(bj + dj, 0, gw - 1)[None, :]
                cand = (ci * gw + cj).reshape(-1)
                d = ((feats - centre_col[cand]) ** 2).sum(1) * inv_c
                d += ((yy.reshape(-1) - centre_pos[cand, 0]) ** 2 + (xx.reshape(-1) - centre_pos[cand, 1]) ** 2) * inv_s
                better = d < best
                best = np.where(better, d, best)
                labels = np.where(better, cand, labels)
        counts = np.bincount(labels, minlength=gh * gw).astype(np.float64)
        keep = counts > 0
        for c in range(feats.shape[1]):
            sums = np.bincount(labels, feats[:, c], minlength=gh * gw)
            centre_col[keep, c] = sums[keep] / counts[keep]
        for c, coord in enumerate((yy.reshape(-1), xx.reshape(-1))):
            sums = np.bincount(labels, coord, minlength=gh * gw)
            centre_pos[keep, c] = sums[keep] / counts[keep]
    return labels.reshape(h, w)


def region_vote(probs: np.ndarray, regions: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Every cell of ``probs (K, h, w)`` replaced by the mean probabilities of its region.

    ``regions``: ``int (h, w)`` ids; ``valid``: optional ``bool (h, w)``, cells that vote (invalid
    cells still receive their region's mean; a region without a valid cell keeps its own values).
    """
    k, h, w = probs.shape
    ids = regions.reshape(-1)
    n = int(ids.max()) + 1
    weight = np.ones(h * w) if valid is None else valid.reshape(-1).astype(np.float64)
    counts = np.bincount(ids, weight, minlength=n)
    out = np.empty_like(probs)
    for kk in range(k):
        flat = probs[kk].reshape(-1)
        sums = np.bincount(ids, flat * weight, minlength=n)
        mean = np.divide(sums, counts, out=np.zeros(n), where=counts > 0)
        out[kk] = np.where(counts[ids] > 0, mean[ids], flat).reshape(h, w)
    return out


def class_prior(probs: np.ndarray, iters: int = 1, tol: float = 1e-6) -> np.ndarray:
    """Class shares ``float64 (K,)`` of the cells ``probs (K, N)`` (probabilities under equal priors).

    EM for the mixing weights of fixed class likelihoods: the posterior of every cell under the
    current shares, then the shares as the mean posterior, from equal shares for ``iters`` rounds
    or until no share moves by ``tol``. One round gives the mean probabilities of the cells. Run to
    convergence, EM on a scene mostly of one class gives that class nearly everything; one round
    (the default of ``predict.prior_rounds``) measured best (docs/benchmarks.md, "Class prior").
    No cells: equal shares.
    """
    k = probs.shape[0]
    prior = np.full(k, 1.0 / k)
    if probs.size == 0:
        return prior
    p = probs.astype(np.float64)
    for _ in range(max(0, iters)):
        post = p * prior[:, None]
        post /= np.maximum(post.sum(0, keepdims=True), 1e-300)
        new = post.mean(1)
        done = float(np.abs(new - prior).max()) < tol
        prior = new
        if done:
            break
    return prior


def merge_classes(probs: np.ndarray, groups: np.ndarray | None, n: int) -> np.ndarray:
    """``probs (K, ...)`` merged into ``n`` classes (row ``i`` belongs to class ``groups[i]``; ``None``: unchanged).

    A class scores the largest probability of its rows, renormalised over the classes, so a cell
    takes the class of its most likely row, exactly as relabelling the rows' argmax would, and the
    class prior and the region vote then work on these scores. Summing the rows instead measured far
    worse: the codebook's soft assignment spreads probability over all K prototypes, so a class of
    many prototypes collects a large share everywhere and takes over whole rasters (DeepGlobe, 30 ids
    named as 6 classes: dataset-matched mIoU 0.06 summed against 0.46 with the maximum;
    docs/benchmarks.md, "Many prototypes, named").
    """
    if groups is None:
        return probs
    out = np.zeros((n, *probs.shape[1:]), probs.dtype)
    np.maximum.at(out, groups, probs)
    return out / np.maximum(out.sum(0, keepdims=True), np.finfo(out.dtype).tiny)


def apply_prior(probs: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """``probs (K, ...)`` reweighted by the class shares ``prior (K,)`` and renormalised per cell."""
    out = probs * prior.reshape((-1,) + (1,) * (probs.ndim - 1)).astype(probs.dtype)
    return out / np.maximum(out.sum(0, keepdims=True), np.finfo(probs.dtype).tiny)
