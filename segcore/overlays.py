"""Overlay PNGs for evaluation: ``image | prediction | labels`` side by side.

The prediction panel paints every segment with the colour of the class it was matched to (so the
colours of the two right panels agree), segments matched to no class in grey, and nodata in black;
the labels panel paints class ids with the same palette and ignore/nodata (``<= 0``) in black.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

#: Colours of classes 1..12 (RGB); larger ids cycle.
PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
     [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40]],
    dtype=np.uint8,
)
UNMATCHED = np.array([128, 128, 128], np.uint8)
NODATA = np.array([0, 0, 0], np.uint8)
GAP = 4  # white pixels between panels


def matched_classes(pred: np.ndarray, target: np.ndarray, num_classes: int) -> dict[int, int]:
    """``{segment id: class id}`` of the one-to-one Hungarian matching on pixels with ``target > 0``.

    The same matching as :func:`segcore.metrics.matched_confusion` (same overlap matrix, same
    solver); segments left unmatched are absent from the dict.
    """
    keep = target > 0
    segs, seg = np.unique(pred[keep], return_inverse=True)
    if segs.size == 0:
        return {}
    t = target[keep].astype(np.int64) - 1
    overlap = np.bincount(seg * num_classes + t, minlength=segs.size * num_classes).reshape(segs.size, num_classes)
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    return {int(segs[r]): int(c) + 1 for r, c in zip(rows, cols, strict=True)}


def class_colours(ids: np.ndarray) -> np.ndarray:
    """``uint8 (..., 3)`` palette colours of class ids ``>= 1`` (black for ``<= 0``)."""
    ids = np.asarray(ids)
    out = PALETTE[(np.maximum(ids, 1) - 1) % len(PALETTE)]
    out[ids <= 0] = NODATA
    return out


def render_overlay(image: np.ndarray, pred: np.ndarray, target: np.ndarray, valid: np.ndarray,
                   mapping: dict[int, int]) -> np.ndarray:
    """``uint8 (H, 3W + 2*GAP, 3)``: image, prediction coloured by ``mapping``, labels."""
    h, w = pred.shape
    lut_keys = np.unique(pred)
    pred_rgb = np.empty((h, w, 3), np.uint8)
    pred_rgb[...] = UNMATCHED
    for seg in lut_keys:
        if int(seg) in mapping:
            pred_rgb[pred == seg] = class_colours(np.array(mapping[int(seg)]))
    pred_rgb[~valid] = NODATA
    gap = np.full((h, GAP, 3), 255, np.uint8)
    img = np.where(valid[..., None], image, 0).astype(np.uint8)
    return np.concatenate([img, gap, pred_rgb, gap, class_colours(target)], axis=1)


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write ``uint8 (H, W, 3)`` as PNG through a temp name in the same directory."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(rgb).save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
