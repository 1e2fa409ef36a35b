"""Label rasters must sit on their image's grid: transforms compared, not assumed (``docs/reliability.md``)."""

from __future__ import annotations

from pathlib import Path

from segcore.errors import RasterError

GRID_TOLERANCE_PX = 0.01  # label and image corners may disagree by this much (in image pixels)


def check_label_grid(image_path: str | Path, label_path: str | Path, tol_px: float = GRID_TOLERANCE_PX) -> None:
    """RasterError unless the label's transform puts its pixels on the image's pixels.

    Both files' own (native) transforms are compared at the label's four corners, in image pixels;
    a difference over ``tol_px`` is refused with both transforms in the message. Sizes and CRS are
    checked by :func:`segcore.data.raster.check_label`, which calls this.
    """
    import rasterio

    with rasterio.Env(), rasterio.open(image_path) as img, rasterio.open(label_path) as lbl:
        image_t, label_t, width, height = img.transform, lbl.transform, lbl.width, lbl.height
    if image_t.is_identity and label_t.is_identity:
        return
    try:
        to_image = ~image_t
    except Exception as exc:  # a degenerate (non-invertible) image transform
        raise RasterError(f"{image_path}: transform {tuple(image_t)[:6]} is not invertible") from exc
    a, b, c, d, e, f = tuple(to_image @ label_t)[:6]  # label pixel -> image pixel
    worst = 0.0
    for col, row in ((0, 0), (width, 0), (0, height), (width, height)):
        worst = max(worst, abs(a * col + b * row + c - col), abs(d * col + e * row + f - row))
    if not worst <= tol_px:
        raise RasterError(
            f"{label_path}: label transform {_fmt(label_t)} does not match image {image_path} transform "
            f"{_fmt(image_t)} (pixels off by up to {worst:.3g} px, tolerance {tol_px} px); "
            "resample the label onto the image's grid")


def _fmt(t) -> str:
    return "(" + ", ".join(f"{v:.10g}" for v in tuple(t)[:6]) + ")"
