"""Scoring unsupervised segmentations: Hungarian-matched and majority IoU, label-free proxies, k-means.

Segment ids of an unsupervised model are arbitrary, so they are matched to classes before any
IoU is computed. Confusion matrices here are ``int64 (C + 1, C + 1)`` indexed by class id:
``conf[p, t]`` counts pixels of true class ``t`` (1..C) given class ``p``; row 0 holds pixels of
segments matched to no class (they are errors: false negatives of their true class, false
positives of nobody) and column 0 is always 0 (target ``<= 0`` is ignored). Everything is numpy
and scipy; accumulators return flat dicts whose keys are the MLflow metric names.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment


def _masked_overlap(pred: np.ndarray, target: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``overlap int64 (S, C)`` of the S segments present where ``target > 0``, and true classes there."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {pred.shape} differs from target shape {target.shape}")
    keep = target > 0
    t = target[keep].astype(np.int64)
    if t.size and t.max() > num_classes:
        raise ValueError(f"target holds class {t.max()} but num_classes={num_classes}")
    _, seg = np.unique(pred[keep], return_inverse=True)
    n_seg = int(seg.max()) + 1 if seg.size else 0
    overlap = np.bincount(seg * num_classes + (t - 1), minlength=n_seg * num_classes)
    return overlap.reshape(n_seg, num_classes), (seg, t)


def _confusion(seg_class: np.ndarray, seg: np.ndarray, t: np.ndarray, num_classes: int) -> np.ndarray:
    n = num_classes + 1
    return np.bincount(seg_class[seg] * n + t, minlength=n * n).reshape(n, n).astype(np.int64)


def matched_confusion(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion of one image after one-to-one Hungarian matching of segments to classes.

    Args:
        pred: ``(H, W)`` integer segment ids (any values; arbitrary order).
        target: ``(H, W)`` class ids ``1..num_classes``; pixels with ``target <= 0`` are ignored.
        num_classes: C.

    Returns:
        ``int64 (C + 1, C + 1)``: ``conf[p, t]`` pixels of true class ``t`` in segments matched to
        class ``p``; row 0 counts pixels of segments left unmatched (when there are more than C
        segments). Matching maximises the total overlap (``scipy.optimize.linear_sum_assignment``).
    """
    overlap, (seg, t) = _masked_overlap(pred, target, num_classes)
    seg_class = np.zeros(overlap.shape[0], dtype=np.int64)
    if overlap.size:
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        seg_class[rows] = cols + 1
    return _confusion(seg_class, seg, t, num_classes)


def majority_confusion(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Many-to-one confusion: every segment goes to its majority true class (ties: lowest id).

    Same inputs and layout as :func:`matched_confusion`; row 0 is always 0.
    """
    overlap, (seg, t) = _masked_overlap(pred, target, num_classes)
    seg_class = overlap.argmax(axis=1).astype(np.int64) + 1 if overlap.size else np.zeros(0, np.int64)
    return _confusion(seg_class, seg, t, num_classes)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """``float64 (C,)`` IoU of classes 1..C from a ``(C + 1, C + 1)`` confusion; NaN for classes absent
    from the targets. IoU = TP / (TP + FP + FN), where FN includes pixels of unmatched segments."""
    tp = np.diag(conf)[1:].astype(np.float64)
    predicted = conf[1:, 1:].sum(axis=1)  # pixels given class p (unmatched pixels are nobody's FP)
    actual = conf[:, 1:].sum(axis=0)  # pixels of true class t, unmatched included
    union = predicted + actual - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / union
    iou[actual == 0] = np.nan
    return iou


def scores(conf: np.ndarray, prefix: str = "") -> dict[str, float]:
    """Flat dict from a confusion: ``miou`` (mean over classes present), ``pixel_acc``, ``iou/<id>``."""
    iou = iou_per_class(conf)
    total = conf.sum()
    out = {
        f"{prefix}miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
        f"{prefix}pixel_acc": float(np.trace(conf[1:, 1:]) / total) if total else 0.0,
    }
    out.update({f"{prefix}iou/{c}": float(v) for c, v in enumerate(iou, start=1) if np.isfinite(v)})
    return out


class MatchedIoU:
    """Accumulates per-image Hungarian-matched and majority confusions over a split.

    ``update(pred, target)`` once per image (``(H, W)`` ints; matching is per image);
    ``compute()`` returns ``miou``, ``pixel_acc``, ``iou/<id>``, ``unmatched_frac`` (share of scored
    pixels in unmatched segments) and the same under ``majority/`` for many-to-one assignment.
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes} must be at least 1")
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        n = self.num_classes + 1
        self.confusion = np.zeros((n, n), dtype=np.int64)
        self.majority = np.zeros((n, n), dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Add one image; returns its matched confusion (for per-image tables)."""
        conf = matched_confusion(pred, target, self.num_classes)
        self.confusion += conf
        self.majority += majority_confusion(pred, target, self.num_classes)
        return conf

    def compute(self) -> dict[str, float]:
        out = scores(self.confusion)
        total = self.confusion.sum()
        out["unmatched_frac"] = float(self.confusion[0].sum() / total) if total else 0.0
        out.update(scores(self.majority, prefix="majority/"))
        return out


class PooledIoU:
    """One matching of ids to classes for a whole split (a legend), for models whose ids mean the
    same class in every image (a codebook).

    ``update(pred, target)`` adds the overlap of ids ``0..num_ids-1`` with classes ``1..C``;
    ``compute()`` matches ids to classes one-to-one (Hungarian) on the overlap summed over the split
    and returns ``miou``, ``pixel_acc`` and ``iou/<id>`` of that single matching. Unlike per-image
    matching it rises only when an id names the same class everywhere: one label per image, or ids
    that swap classes between images, score low.
    """

    def __init__(self, num_ids: int, num_classes: int) -> None:
        if num_ids < 1 or num_classes < 1:
            raise ValueError(f"num_ids={num_ids} and num_classes={num_classes} must be at least 1")
        self.num_ids, self.num_classes = num_ids, num_classes
        self.overlap = np.zeros((num_ids, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        pred, target = np.asarray(pred), np.asarray(target)
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {pred.shape} differs from target shape {target.shape}")
        keep = target > 0
        ids, t = pred[keep].astype(np.int64), target[keep].astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_ids):
            raise ValueError(f"ids must be in 0..{self.num_ids - 1}, got {ids.min()}..{ids.max()}")
        if t.size and t.max() > self.num_classes:
            raise ValueError(f"target holds class {t.max()} but num_classes={self.num_classes}")
        n = self.num_ids * self.num_classes
        self.overlap += np.bincount(ids * self.num_classes + t - 1, minlength=n).reshape(self.overlap.shape)

    def confusion(self) -> np.ndarray:
        """``int64 (C + 1, C + 1)`` of the single matching (row 0: ids matched to no class)."""
        id_class = np.zeros(self.num_ids, dtype=np.int64)
        rows, cols = linear_sum_assignment(self.overlap, maximize=True)
        id_class[rows] = cols + 1
        conf = np.zeros((self.num_classes + 1, self.num_classes + 1), dtype=np.int64)
        np.add.at(conf, (id_class[:, None], np.arange(1, self.num_classes + 1)[None, :]), self.overlap)
        return conf

    def compute(self) -> dict[str, float]:
        return scores(self.confusion())


def _select(labels: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    labels = np.asarray(labels)
    return labels.ravel() if valid is None else labels[np.asarray(valid, dtype=bool)]


def cluster_utilization(labels: np.ndarray, k: int, valid: np.ndarray | None = None) -> float:
    """Normalised entropy of the cluster marginal: ``H(p) / log(k)`` over (valid) pixels, in [0, 1].

    1 when all k clusters cover equal areas, 0 when one cluster takes every pixel. ``labels``:
    ``(H, W)`` ints with at most ``k`` distinct values; ``k >= 2``.
    """
    if k < 2:
        raise ValueError(f"k={k} must be at least 2 for a normalised entropy")
    _, counts = np.unique(_select(labels, valid), return_counts=True)
    if counts.size > k:
        raise ValueError(f"labels hold {counts.size} distinct values, more than k={k}")
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(min(1.0, -(p * np.log(p)).sum() / math.log(k)))


def speckle(labels: np.ndarray, min_size: int) -> float:
    """Share of pixels lying in 4-connected same-label components smaller than ``min_size`` px, in [0, 1]."""
    from skimage.measure import label as connected

    labels = np.asarray(labels)
    if labels.size == 0:
        return 0.0
    # skimage labels each run of equal values separately; background=-2**62 keeps every value a region.
    comp = connected(labels.astype(np.int64), background=-(2**62), connectivity=1)
    sizes = np.bincount(comp.ravel())
    return float((sizes[comp] < min_size).mean())


def boundary_mask(labels: np.ndarray) -> np.ndarray:
    """``bool (H, W)``: pixel has a 4-neighbour with a different label."""
    labels = np.asarray(labels)
    edge = np.zeros(labels.shape, dtype=bool)
    dy = labels[1:, :] != labels[:-1, :]
    dx = labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    return edge


def boundary_density(labels: np.ndarray) -> float:
    """Share of pixels with a 4-neighbour of a different label, in [0, 1] (0: one flat region)."""
    return float(boundary_mask(labels).mean()) if np.asarray(labels).size else 0.0


def two_view_consistency(labels_a: np.ndarray, labels_b: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Share of (valid) pixels with the same label in both maps, in [0, 1].

    Both ``(H, W)`` maps must already be in the same frame (see :func:`segcore.augment.invert_geom`)
    and use the same cluster ids (e.g. shared prototypes).
    """
    a, b = np.asarray(labels_a), np.asarray(labels_b)
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
    same = _select(a == b, valid)
    return float(same.mean()) if same.size else 0.0


class ProxyMetrics:
    """Label-free quality signals averaged per image: ``proxy/utilization``, ``proxy/speckle``,
    ``proxy/boundary_density``.

    Args:
        k: number of clusters the model may use (for the utilisation normaliser).
        min_size: components smaller than this many pixels count as speckle (``EvalConfig.speckle_px``).
    """

    def __init__(self, k: int, min_size: int = 16) -> None:
        self.k, self.min_size = k, min_size
        self.reset()

    def reset(self) -> None:
        self._sums = {"proxy/utilization": 0.0, "proxy/speckle": 0.0, "proxy/boundary_density": 0.0}
        self.count = 0

    def update(self, labels: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
        """Add one ``(H, W)`` label map; returns its own values."""
        one = {
            "proxy/utilization": cluster_utilization(labels, self.k, valid),
            "proxy/speckle": speckle(labels, self.min_size),
            "proxy/boundary_density": boundary_density(labels),
        }
        for key, value in one.items():
            self._sums[key] += value
        self.count += 1
        return one

    def compute(self) -> dict[str, float]:
        return {key: (value / self.count if self.count else 0.0) for key, value in self._sums.items()}


def _sq_dists(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``(N, k)`` squared Euclidean distances, float64 for ties that do not depend on BLAS order."""
    out = np.empty((len(x), len(centres)))
    for j, centre in enumerate(centres):  # one (N, D) temporary at a time
        diff = x - centre
        out[:, j] = np.einsum("nd,nd->n", diff, diff)
    return out


def kmeans_fit(x: np.ndarray, k: int, seed: int, iters: int = 20) -> np.ndarray:
    """Plain Lloyd k-means with k-means++ seeding; returns ``float64 (k, D)`` centres.

    ``x``: ``(N, D)`` points. Deterministic for a given ``seed``. An empty cluster keeps its centre.
    """
    x = np.asarray(x, dtype=np.float64)
    if len(x) < k:
        raise ValueError(f"k-means needs at least k={k} points, got {len(x)}")
    rng = np.random.default_rng(seed)
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.integers(len(x))]
    d2 = _sq_dists(x, centres[:1])[:, 0]
    for j in range(1, k):
        total = d2.sum()
        idx = rng.choice(len(x), p=d2 / total) if total > 0 else rng.integers(len(x))
        centres[j] = x[idx]
        d2 = np.minimum(d2, _sq_dists(x, centres[j : j + 1])[:, 0])
    for _ in range(iters):
        assign = _sq_dists(x, centres).argmin(1)
        sums = np.stack([np.bincount(assign, x[:, d], minlength=k) for d in range(x.shape[1])], axis=1)
        counts = np.bincount(assign, minlength=k)
        moved = counts > 0
        new = centres.copy()
        new[moved] = sums[moved] / counts[moved, None]
        if np.allclose(new, centres):
            break
        centres = new
    return centres


def kmeans_rgb_labels(
    image: np.ndarray, k: int, seed: int, valid: np.ndarray | None = None, max_fit_pixels: int = 50_000
) -> np.ndarray:
    """The colour-only baseline: k-means on RGB pixels.

    Args:
        image: ``uint8 (H, W, 3)``.
        k: clusters.
        seed: seeds the pixel sample and the k-means++ draw.
        valid: ``bool (H, W)`` pixels to cluster; ``None``: all.
        max_fit_pixels: centres are fitted on at most this many randomly sampled pixels.

    Returns:
        ``int64 (H, W)`` cluster ids ``0..k-1``; ``-1`` on invalid pixels.
    """
    h, w, _ = image.shape
    flat = image.reshape(-1, 3).astype(np.float64)
    keep = np.ones(h * w, bool) if valid is None else np.asarray(valid, bool).ravel()
    pts = flat[keep]
    rng = np.random.default_rng(seed)
    fit = pts[np.sort(rng.choice(len(pts), max_fit_pixels, replace=False))] if len(pts) > max_fit_pixels else pts
    centres = kmeans_fit(fit, k, seed=int(rng.integers(2**31)))
    out = np.full(h * w, -1, dtype=np.int64)
    where = np.flatnonzero(keep)
    step = 262_144  # bounded memory for large images
    for start in range(0, len(pts), step):
        out[where[start : start + step]] = _sq_dists(pts[start : start + step], centres).argmin(1)
    return out.reshape(h, w)
