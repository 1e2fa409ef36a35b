"""Procedural aerial-like RGB scenes with ground-truth labels: the embedded default dataset.

A scene is a patchwork of Voronoi parcels (striped crop fields, smooth meadows, blotchy forest)
with smooth water bodies, thin curved roads and clusters of rectangular buildings on top. Colour
alone does not separate the classes: fields and meadows share one colour distribution and differ
only in texture (furrows versus a smooth sward), forest and water overlap in their dark colours,
roofs overlap roads and bare fields, and a low-frequency illumination gain varies across the scene.

Every random draw comes from one ``numpy.random.Generator`` seeded by the scene seed, so the same
seed gives the same scene, byte for byte. :func:`write_synthetic_dataset` writes scenes as
georeferenced GeoTIFFs with a manifest, the layout every other data source reads.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from segcore.errors import ConfigError, RasterError

logger = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = ("field", "meadow", "forest", "water", "road", "building")
FIELD, MEADOW, FOREST, WATER, ROAD, BUILDING = 1, 2, 3, 4, 5, 6

# Parcel colours shared by fields and meadows (RGB, 0..255): green crops, ripe crops, bare soil.
_PARCEL_PALETTE = np.array([[86, 118, 60], [150, 146, 88], [138, 112, 84], [110, 128, 72]], np.float32)
_FOREST_RGB = np.array([52, 74, 46], np.float32)
_WATER_PALETTE = np.array([[46, 64, 80], [52, 70, 66]], np.float32)  # clear and silty water
_ROAD_PALETTE = np.array([[118, 116, 110], [92, 90, 88]], np.float32)
_ROOF_PALETTE = np.array([[150, 84, 64], [128, 126, 122], [196, 192, 184], [96, 94, 98], [140, 112, 86]], np.float32)


@dataclass(frozen=True)
class SyntheticScene:
    """One generated scene.

    Attributes:
        image: ``uint8 (H, W, 3)`` RGB, values 1..255 (0 is kept free for nodata).
        labels: ``uint8 (H, W)`` class ids ``1..K``; ``0`` never occurs in a generated scene.
        class_names: names of classes ``1..K`` in id order.
        seed: the seed the scene was generated from.
    """

    image: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    seed: int


def _as_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 16 or w < 16:
        raise ConfigError(f"synthetic scene size {size} must be at least 16 x 16 pixels")
    return h, w


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """``float32 (H, W)`` value noise with features about ``cell`` px across, roughly in -1..1."""
    gh, gw = int(h / cell) + 3, int(w / cell) + 3
    grid = rng.uniform(-1.0, 1.0, size=(gh, gw)).astype(np.float32)
    off_y, off_x = rng.uniform(0.0, 1.0, size=2)

    def axis(n: int) -> tuple[np.ndarray, np.ndarray]:
        t = np.arange(n, dtype=np.float32) / cell
        i = np.floor(t).astype(np.intp)
        f = t - i
        return i, f * f * (3.0 - 2.0 * f)  # smoothstep: no visible grid creases

    iy, fy = axis(h)
    ix, fx = axis(w)
    iy, ix = iy + int(off_y > 0.5), ix + int(off_x > 0.5)
    rows = grid[iy] * (1.0 - fy)[:, None] + grid[iy + 1] * fy[:, None]  # (H, gw)
    return rows[:, ix] * (1.0 - fx)[None, :] + rows[:, ix + 1] * fx[None, :]


def _parcels(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """``int64 (H, W)`` Voronoi parcel index, computed at stride 2 on slightly warped coordinates."""
    n = max(4, round(h * w / 110.0**2))
    pts = rng.uniform(0.0, 1.0, size=(n, 2)) * (h, w)
    hs, ws = (h + 1) // 2, (w + 1) // 2
    yy, xx = np.mgrid[0:hs, 0:ws].astype(np.float32) * 2.0
    warp = 6.0
    yy += warp * _smooth_noise(rng, hs, ws, 24.0)
    xx += warp * _smooth_noise(rng, hs, ws, 24.0)
    _, idx = cKDTree(pts).query(np.stack([yy.ravel(), xx.ravel()], axis=1), workers=1)
    small = idx.reshape(hs, ws)
    return np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)[:h, :w]


def _stamp_disc(mask: np.ndarray, pts: np.ndarray, radius: float) -> None:
    """Set ``mask`` True within ``radius`` px of every point of ``pts`` (N, 2) (row, col)."""
    r = math.ceil(radius)
    oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
    keep = oy**2 + ox**2 <= radius**2
    offs = np.stack([oy[keep], ox[keep]], axis=1)
    cells = np.rint(pts).astype(np.intp)[:, None, :] + offs[None, :, :]
    cells = cells.reshape(-1, 2)
    inside = (cells[:, 0] >= 0) & (cells[:, 0] < mask.shape[0]) & (cells[:, 1] >= 0) & (cells[:, 1] < mask.shape[1])
    mask[cells[inside, 0], cells[inside, 1]] = True


def _road_centreline(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """``(N, 2)`` points (row, col), 1 px apart, of a gently curving road crossing the scene."""
    side, t = int(rng.integers(4)), rng.uniform(0.0, 1.0)  # which border, and where along it
    start = [(0.0, t * w), (h - 1.0, t * w), (t * h, 0.0), (t * h, w - 1.0)][side]
    heading = math.atan2(h / 2 - start[0], w / 2 - start[1]) + rng.uniform(-0.6, 0.6)
    steps = int(2.5 * (h + w))
    curvature = rng.uniform(0.002, 0.008) * _smooth_noise(rng, 1, steps, 120.0)[0]  # rad per px
    angles = heading + np.cumsum(curvature)
    pts = np.stack([start[0] + np.cumsum(np.sin(angles)), start[1] + np.cumsum(np.cos(angles))], axis=1)
    inside = (pts[:, 0] > -2) & (pts[:, 0] < h + 1) & (pts[:, 1] > -2) & (pts[:, 1] < w + 1)
    first_out = np.argmin(inside) if not inside.all() else len(pts)
    return pts[:first_out]


def _buildings(rng: np.random.Generator, labels: np.ndarray, colour: np.ndarray, shade: np.ndarray) -> None:
    """Clusters of rotated rectangular houses with gabled roofs, drawn into the maps in place."""
    h, w = labels.shape
    n_clusters = max(1, round(h * w / 300.0**2 * rng.uniform(0.8, 1.6)))
    for _ in range(n_clusters):
        cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        theta = rng.uniform(0.0, math.pi)
        c, s = math.cos(theta), math.sin(theta)
        spacing = rng.uniform(24.0, 34.0)
        rows, cols = int(rng.integers(2, 5)), int(rng.integers(2, 6))
        for i in range(rows):
            for j in range(cols):
                if rng.uniform() < 0.25:
                    continue
                u = (j - (cols - 1) / 2) * spacing + rng.normal(0.0, 2.0)
                v = (i - (rows - 1) / 2) * spacing + rng.normal(0.0, 2.0)
                py, px = cy + u * s + v * c, cx + u * c - v * s
                half_u, half_v = rng.uniform(6.0, 12.0), rng.uniform(4.5, 8.0)
                roof = _ROOF_PALETTE[rng.integers(len(_ROOF_PALETTE))] * rng.uniform(0.9, 1.1)
                _draw_house(labels, colour, shade, (py, px), (c, s), (half_u, half_v), roof)


def _draw_house(labels, colour, shade, centre, direction, half, roof) -> None:
    h, w = labels.shape
    r = math.ceil(math.hypot(*half)) + 1
    y0, y1 = max(0, int(centre[0]) - r), min(h, int(centre[0]) + r + 1)
    x0, x1 = max(0, int(centre[1]) - r), min(w, int(centre[1]) + r + 1)
    if y0 >= y1 or x0 >= x1 or labels[min(h - 1, max(0, int(centre[0]))), min(w - 1, max(0, int(centre[1])))] == WATER:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    u = dx * direction[0] + dy * direction[1]
    v = -dx * direction[1] + dy * direction[0]
    inside = (np.abs(u) <= half[0]) & (np.abs(v) <= half[1])
    labels[y0:y1, x0:x1][inside] = BUILDING
    colour[y0:y1, x0:x1][inside] = roof
    # Gable: the two roof halves catch the light differently; the ridge is a thin dark line.
    gable = np.where(v > 0, 0.82, 1.0) * np.where(np.abs(v) < 0.8, 0.85, 1.0)
    shade[y0:y1, x0:x1][inside] = gable[inside]


def _texture(rng: np.random.Generator, labels: np.ndarray, parcel: np.ndarray, n_parcels: int) -> np.ndarray:
    """``float32 (H, W)`` multiplicative brightness texture, chosen per class."""
    h, w = labels.shape
    fine = rng.standard_normal((h, w), dtype=np.float32)
    tex = np.ones((h, w), np.float32)
    # Fields: furrows, one orientation, period and depth per parcel.
    theta = rng.uniform(0.0, math.pi, n_parcels).astype(np.float32)
    period = rng.uniform(5.0, 10.0, n_parcels).astype(np.float32)
    depth = rng.uniform(0.14, 0.24, n_parcels).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    m = labels == FIELD
    p = parcel[m]
    phase = (xx[m] * np.cos(theta[p]) + yy[m] * np.sin(theta[p])) / period[p]
    tex[m] = 1.0 + depth[p] * np.sin(2.0 * np.pi * phase) + 0.03 * fine[m]
    # Meadow: smooth sward with gentle mottling.
    m = labels == MEADOW
    tex[m] = 1.0 + 0.05 * _smooth_noise(rng, h, w, 14.0)[m] + 0.03 * fine[m]
    # Forest: blotchy canopy of crowns and shadows.
    m = labels == FOREST
    crowns = _smooth_noise(rng, h, w, 3.5) + 0.5 * _smooth_noise(rng, h, w, 7.0)
    tex[m] = 1.0 + 0.3 * crowns[m] + 0.05 * fine[m]
    # Water: near-flat with faint ripples.
    m = labels == WATER
    ripple = np.sin(2.0 * np.pi * (yy[m] + 3.0 * _smooth_noise(rng, h, w, 20.0)[m]) / 4.0)
    tex[m] = 1.0 + 0.025 * ripple + 0.015 * fine[m]
    # Roads and roofs: nearly flat surfaces.
    for cls in (ROAD, BUILDING):
        m = labels == cls
        tex[m] = 1.0 + 0.03 * fine[m]
    return tex


def generate_scene(size: int | tuple[int, int], seed: int, num_classes: int = 6) -> SyntheticScene:
    """Generate one aerial-like scene with labels.

    Args:
        size: side in pixels, or ``(height, width)``; at least 16 each.
        seed: any non-negative int; the same seed gives an identical scene.
        num_classes: 2..6; classes are added in the order field, meadow, forest, water, road, building.

    Returns:
        A :class:`SyntheticScene` of ``uint8 (H, W, 3)`` RGB and ``uint8 (H, W)`` labels ``1..num_classes``.
    """
    if not 2 <= num_classes <= len(CLASS_NAMES):
        raise ConfigError(f"num_classes={num_classes} must be within 2..{len(CLASS_NAMES)}")
    h, w = _as_hw(size)
    rng = np.random.default_rng(seed)
    parcel = _parcels(rng, h, w)
    n_parcels = int(parcel.max()) + 1
    # Parcel classes and colours: field and meadow draw from the same palette and jitter.
    probs = np.array([0.45, 0.35, 0.20])[: min(3, num_classes)]
    parcel_class = rng.choice(np.arange(1, len(probs) + 1), size=n_parcels, p=probs / probs.sum())
    parcel_rgb = _PARCEL_PALETTE[rng.integers(len(_PARCEL_PALETTE), size=n_parcels)]
    parcel_rgb = parcel_rgb * rng.uniform(0.85, 1.15, size=(n_parcels, 1)) + rng.normal(0, 6, (n_parcels, 3))
    is_forest = parcel_class == FOREST
    parcel_rgb[is_forest] = _FOREST_RGB * rng.uniform(0.85, 1.15, size=(int(is_forest.sum()), 1))
    labels = parcel_class[parcel].astype(np.uint8)
    colour = parcel_rgb[parcel].astype(np.float32)  # (H, W, 3)
    shade = np.ones((h, w), np.float32)
    if num_classes >= WATER:
        blob = _smooth_noise(rng, h, w, 140.0) + 0.35 * _smooth_noise(rng, h, w, 45.0)
        water = blob > rng.uniform(0.55, 0.75)
        labels[water] = WATER
        colour[water] = _WATER_PALETTE[rng.integers(len(_WATER_PALETTE))] * rng.uniform(0.9, 1.1)
    if num_classes >= BUILDING:
        _buildings(rng, labels, colour, shade)
    if num_classes >= ROAD:
        for _ in range(1 + rng.poisson(h * w / 500.0**2)):
            pts = _road_centreline(rng, h, w)
            road = np.zeros((h, w), bool)
            if len(pts):
                _stamp_disc(road, pts, rng.uniform(2.5, 4.5))
            labels[road] = ROAD
            colour[road] = _ROAD_PALETTE[rng.integers(len(_ROAD_PALETTE))] * rng.uniform(0.9, 1.1)
    tex = _texture(rng, labels, parcel, n_parcels) * shade
    gain = 1.0 + 0.22 * _smooth_noise(rng, h, w, 260.0)  # low-frequency illumination
    rgb = colour * (tex * gain)[..., None] + rng.normal(0.0, 2.0, size=(h, w, 3)).astype(np.float32)
    image = np.clip(np.rint(rgb), 1, 255).astype(np.uint8)
    return SyntheticScene(image=image, labels=labels, class_names=CLASS_NAMES[:num_classes], seed=int(seed))


def scene_seed(seed: int, index: int) -> int:
    """Seed of scene ``index`` of a dataset generated with ``seed`` (deterministic, well mixed)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def scene_to_sample(
    scene: SyntheticScene,
    require_slic: bool = True,
    slic_region_size: int = 24,
    slic_compactness: float = 10.0,
) -> dict:
    """The scene as a sample dict (see ``docs/architecture.md``).

    Returns ``image float32 (3, H, W)`` in 0..1, ``slic int64 (H, W)`` (ids 1..S; all 0 when
    ``require_slic`` is False, meaning "no superpixels"), ``target int64 (H, W)`` class ids,
    ``valid bool (H, W)`` (all True) and a JSON-able ``meta``.
    """
    import torch

    from segcore.data.slic import compute_slic

    h, w = scene.labels.shape
    valid = np.ones((h, w), dtype=bool)
    if require_slic:
        slic = compute_slic(scene.image, valid, slic_region_size, slic_compactness)
    else:
        slic = np.zeros((h, w), dtype=np.int64)
    return {
        "image": torch.from_numpy(scene.image.transpose(2, 0, 1).astype(np.float32) / 255.0),
        "slic": torch.from_numpy(slic),
        "target": torch.from_numpy(scene.labels.astype(np.int64)),
        "valid": torch.from_numpy(valid),
        "meta": {
            "source": f"synthetic:seed={scene.seed}",
            "window": [0, 0, w, h],
            "crs": None,
            "transform": None,
            "tile_id": f"synthetic-{scene.seed}",
        },
    }


def _atomic_write_tif(path: Path, array: np.ndarray, profile: dict, tags: dict | None = None) -> None:
    """Write ``array`` (bands, H, W) to ``path`` through a temp file in the same directory."""
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with rasterio.open(tmp, "w", driver="GTiff", **profile) as dst:
            dst.write(array)
            if tags:
                dst.update_tags(**tags)
        os.replace(tmp, path)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise RasterError(f"cannot write {path}: {exc}; check the directory is writable and has space") from exc


def write_scene_geotiff(
    scene: SyntheticScene,
    image_path: str | Path,
    label_path: str | Path,
    *,
    crs: str = "EPSG:32633",
    origin: tuple[float, float] = (500000.0, 5000000.0),
    pixel_size: float = 0.5,
    nodata_border: int = 0,
) -> None:
    """Write the scene as a georeferenced RGB GeoTIFF and a matching label GeoTIFF.

    Both files: tiled 256 x 256, deflate, projected ``crs``, north-up transform with the upper-left
    corner at ``origin`` (x, y in CRS units) and square ``pixel_size`` (CRS units per pixel).
    The image is 3-band uint8 with ``nodata=0`` declared (generated pixels are never 0); the
    outermost ``nodata_border`` pixels are set to 0 in the image and to 0 (ignore) in the labels.
    The label file is 1-band uint8: 0 = ignore, 1..K = classes (names in its ``class_names`` tag).
    """
    from affine import Affine

    image = scene.image.transpose(2, 0, 1).copy()  # (3, H, W)
    labels = scene.labels[None].copy()  # (1, H, W)
    if nodata_border < 0:
        raise ConfigError(f"nodata_border={nodata_border} must be >= 0 pixels")
    if nodata_border:
        keep = np.zeros(labels.shape[1:], dtype=bool)
        keep[nodata_border:-nodata_border, nodata_border:-nodata_border] = True
        image[:, ~keep] = 0
        labels[:, ~keep] = 0
    h, w = labels.shape[1:]
    profile = {
        "height": h,
        "width": w,
        "dtype": "uint8",
        "crs": crs,
        # Same as rasterio.transform.from_origin, which warns (PendingDeprecationWarning) on affine>=2.4.
        "transform": Affine(pixel_size, 0.0, origin[0], 0.0, -pixel_size, origin[1]),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    _atomic_write_tif(Path(image_path), image, {**profile, "count": 3, "nodata": 0, "photometric": "RGB"})
    tags = {"class_names": ",".join(scene.class_names), "seed": str(scene.seed)}
    _atomic_write_tif(Path(label_path), labels, {**profile, "count": 1}, tags)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


#: Metres per pixel of the georeferenced synthetic scenes (the default ``data.gsd``).
SYNTHETIC_GSD = 2.0


def write_synthetic_dataset(
    out_dir: str | Path,
    count: int,
    size: int | tuple[int, int],
    seed: int,
    *,
    nodata_border: int = 0,
    val_fraction: float = 0.2,
) -> Path:
    """Write ``count`` scenes as GeoTIFFs plus ``manifest.csv`` and ``classes.csv``; return ``out_dir``.

    Layout: ``images/scene-000.tif``, ``labels/scene-000.tif``, ...; ``manifest.csv`` has columns
    ``image,label,split`` (paths relative to ``out_dir``; the last ``round(val_fraction * count)``
    scenes, at least one when ``count >= 2``, are ``val``); ``classes.csv`` has ``id,name``.
    Scene ``i`` uses seed :func:`scene_seed` ``(seed, i)`` and sits at its own origin (scenes are
    laid out west to east with a 100 m gap, so no two overlap). Pixels are :data:`SYNTHETIC_GSD`
    metres: the generator draws its textures at pixel scale, so the scenes say they are at the
    default working resolution (``data.gsd``) and are read as drawn.
    """
    if count < 1:
        raise ConfigError(f"count={count} must be at least 1 scene")
    out = Path(out_dir)
    h, w = _as_hw(size)
    n_val = min(count - 1, max(1, round(val_fraction * count))) if count >= 2 else 0
    pixel_size = SYNTHETIC_GSD
    rows = ["image,label,split"]
    for i in range(count):
        scene = generate_scene((h, w), scene_seed(seed, i))
        name = f"scene-{i:03d}.tif"
        origin = (500000.0 + i * (w * pixel_size + 100.0), 5000000.0)
        paths = (out / "images" / name, out / "labels" / name)
        write_scene_geotiff(scene, *paths, origin=origin, pixel_size=pixel_size, nodata_border=nodata_border)
        split = "val" if i >= count - n_val else "train"
        rows.append(f"images/{name},labels/{name},{split}")
        logger.debug("wrote scene %d (seed %d) to %s", i, scene.seed, paths[0])
    _atomic_write_text(out / "manifest.csv", "\n".join(rows) + "\n")
    classes = ["id,name", "0,ignore"] + [f"{i},{n}" for i, n in enumerate(CLASS_NAMES, start=1)]
    _atomic_write_text(out / "classes.csv", "\n".join(classes) + "\n")
    return out
