"""SLIC superpixels for one tile: ids ``1..S`` on valid pixels, ``0`` on nodata."""

from __future__ import annotations

import math

import numpy as np


def compute_slic(
    image: np.ndarray,
    valid: np.ndarray | None = None,
    region_size: int = 24,
    compactness: float = 10.0,
) -> np.ndarray:
    """SLIC superpixels of an RGB tile, computed in CIELAB.

    Args:
        image: ``uint8 (H, W, 3)`` RGB tile.
        valid: ``bool (H, W)`` pixels that carry data; ``None`` means all of them.
        region_size: approximate superpixel side in pixels; ``n_segments = ceil(H * W / region_size**2)``.
        compactness: SLIC compactness (higher: squarer superpixels), in LAB units.

    Returns:
        ``int64 (H, W)`` superpixel ids, consecutive ``1..S``, and ``0`` where ``valid`` is False.
        Deterministic: the same tile always gives the same ids.
    """
    from skimage.color import rgb2lab
    from skimage.segmentation import slic

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"compute_slic expects a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    if region_size < 1:
        raise ValueError(f"region_size={region_size} must be at least 1 pixel")
    h, w = image.shape[:2]
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != (h, w):
            raise ValueError(f"valid mask shape {valid.shape} does not match the image ({h}, {w})")
        if not valid.any():
            return np.zeros((h, w), dtype=np.int64)
        # The masked code path seeds centroids with k-means; skip it when nothing is masked.
        mask = None if valid.all() else valid
    else:
        mask = None
    n_segments = max(1, math.ceil(h * w / region_size**2))
    lab = rgb2lab(image)
    seg = slic(
        lab,
        n_segments=n_segments,
        compactness=compactness,
        start_label=1,
        mask=mask,
        channel_axis=-1,
        convert2lab=False,
    ).astype(np.int64)
    if mask is not None:
        seg[~mask] = 0
    # Make ids consecutive 1..S (SLIC may skip ids after enforcing connectivity).
    ids, inverse = np.unique(seg, return_inverse=True)
    offset = 0 if ids[0] == 0 else 1
    return (inverse.reshape(h, w) + offset).astype(np.int64)
