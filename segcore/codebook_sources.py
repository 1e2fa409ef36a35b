"""Where a codebook's sample windows come from: training shards, rasters, or synthetic scenes.

Every function returns ``(windows, description)`` with ``windows`` a list of
``(rgb uint8 (side, side, 3), valid bool (side, side))`` (smaller where a tile or raster is smaller)
at the working resolution the model was trained at, and ``description`` a short string recorded in
``meta.json["codebook"]["source"]``. Window choice is random but fully determined by ``seed``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from segcore.codebook import (
    DEFAULT_K,
    Codebook,
    CodebookRequest,
    fit_codebook,
    prototype_names,
    resolve_class_names,
    window_origins,
)
from segcore.config import Config, DataConfig
from segcore.errors import ArtifactError, ConfigError, SegcoreError
from segcore.runtime import NumpyModel

log = logging.getLogger(__name__)

Windows = list[tuple[np.ndarray, np.ndarray]]


def shard_windows(root: str | Path, split: str, n: int, side: int, seed: int) -> tuple[Windows, str]:
    """``n`` windows from random tiles of a published shard dataset's ``split``."""
    from segcore.data.shard_index import read_index, read_manifest

    root = Path(root)
    splits = read_manifest(root).get("splits", {})
    if split not in splits:
        raise ArtifactError(f"{root}: no split {split!r} to fit a codebook on (has {', '.join(sorted(splits))})")
    tiles = [root / rel / str(row["rgb_file"]) for rel in splits[split]["shards"]
             for row in read_index(root / rel).to_dict("records")]
    if not tiles:
        raise ArtifactError(f"{root}: split {split!r} holds no tiles")
    rng = np.random.default_rng(seed)
    picks = rng.permutation(len(tiles))
    picks = np.concatenate([picks] * (n // len(tiles) + 1))[:n]
    out: Windows = []
    for i in picks:
        with rasterio.open(tiles[i]) as ds:
            sw, sh = min(side, ds.width), min(side, ds.height)
            win = Window(window_origins(ds.width, sw, rng), window_origins(ds.height, sh, rng), sw, sh)
            rgb = np.ascontiguousarray(ds.read([1, 2, 3], window=win).transpose(1, 2, 0))
            valid = ds.read_masks(1, window=win) > 0
        out.append((np.where(valid[..., None], rgb, 0).astype(np.uint8), valid))
    return out, f"shards {root} split {split} ({len(tiles)} tiles)"


def raster_windows(paths: list[str], data_cfg: DataConfig, n: int, side: int, seed: int) -> tuple[Windows, str]:
    """``n`` windows spread over ``paths`` (round robin in a seeded order), read on the working grid."""
    from segcore.data.raster import inspect_raster, open_raster, read_rgb

    if not paths:
        raise ArtifactError("no rasters to fit a codebook on")
    rng = np.random.default_rng(seed)
    order = [paths[i] for i in rng.permutation(len(paths))]
    out: Windows = []
    for j, path in enumerate(order):
        count = n // len(order) + (1 if j < n % len(order) else 0)
        if count == 0:
            continue
        info = inspect_raster(path, data_cfg)
        sw, sh = min(side, info.width), min(side, info.height)
        with open_raster(path) as ds:
            for _ in range(count):
                win = Window(window_origins(info.width, sw, rng), window_origins(info.height, sh, rng), sw, sh)
                out.append(read_rgb(ds, info, win, data_cfg))
    names = ", ".join(Path(p).name for p in paths[:5]) + (" ..." if len(paths) > 5 else "")
    return out, f"rasters ({len(paths)}): {names}"


def synthetic_windows(n: int, side: int, seed: int, scenes: int = 8) -> tuple[Windows, str]:
    """``n`` windows from ``scenes`` generated synthetic scenes (``scene_seed(seed, i)``)."""
    from segcore.data.synthetic import generate_scene, scene_seed

    size = max(2 * side, 512)
    imgs = [generate_scene(size, scene_seed(seed, i)).image for i in range(scenes)]
    rng = np.random.default_rng(seed)
    out: Windows = []
    for i in range(n):
        img = imgs[i % scenes]
        r, c = window_origins(img.shape[0], side, rng), window_origins(img.shape[1], side, rng)
        out.append((np.ascontiguousarray(img[r : r + side, c : c + side]), np.ones((side, side), bool)))
    return out, f"synthetic scenes ({scenes} of {size} px, seed {seed})"


def sample_windows(cfg: Config, req: CodebookRequest) -> tuple[Windows, str]:
    """Windows for ``req.source`` (see :class:`~segcore.codebook.CodebookRequest`) under config ``cfg``.

    ``auto``: the published shards of ``cfg.data`` when they exist, else the config's rasters
    (``data.manifest`` / ``data.raster_paths``), else synthetic scenes when ``data.source`` is
    ``synthetic``. An ArtifactError says what to pass when none of these is available.
    """
    from segcore.data.raster import discover_sources

    n, side, seed = req.windows, req.side, req.seed
    root = Path(cfg.data.processed_root) / cfg.data.dataset
    if req.source == "shards" or (req.source == "auto" and (root / "manifest.json").is_file()):
        return shard_windows(root, cfg.data.split, n, side, seed)
    if req.source == "synthetic" or (req.source == "auto" and cfg.data.source == "synthetic"):
        return synthetic_windows(n, side, seed)
    if req.source == "auto":
        try:
            paths = [s.image for s in discover_sources(cfg.data)]
        except SegcoreError as exc:
            raise ArtifactError(
                f"no training data found to fit the codebook on: no shards at {root} and {exc}. Pass "
                "`segcore export --codebook-data DIR|GLOB|CSV` (or `--no-codebook`)") from exc
        return raster_windows(paths, cfg.data, n, side, seed)
    entry = req.source
    if entry.lower().endswith(".csv"):
        paths = [s.image for s in discover_sources(DataConfig(manifest=entry))]
    elif (Path(entry) / "manifest.json").is_file():
        return shard_windows(entry, cfg.data.split, n, side, seed)
    else:
        paths = [s.image for s in discover_sources(DataConfig(raster_paths=(entry,)))]
    return raster_windows(paths, cfg.data, n, side, seed)


def export_codebook(meta: dict, arrays: dict[str, np.ndarray], cfg: Config, req: CodebookRequest
                    ) -> tuple[dict[str, np.ndarray], Codebook]:
    """Fit the codebook of an export being written: ``(codebook.npz arrays, codebook)``.

    Runs the numpy runtime on the export's own ``meta``/``arrays`` (the exact path ``segcore
    predict`` runs) and adds ``meta["codebook"]`` (the fit record) and ``meta["class_names"]``
    (``req.class_names``, else the config's ``predict.class_names``, else ``class 1..k``).
    """
    names = tuple(req.class_names or cfg.predict.class_names)
    req = replace(req, k=req.k or len(names) or DEFAULT_K)
    classes = resolve_class_names(names, req.k)
    if req.merge_from and req.merge_from <= req.k:
        raise ConfigError(f"codebook merge_from={req.merge_from} (--codebook-merge-from) must exceed k={req.k}, "
                          "the classes its prototypes are grouped into (0: off)")
    model = NumpyModel(meta, arrays)
    windows, source = sample_windows(cfg, req)
    codebook = fit_codebook(model, windows, req, source)
    if "merge" in codebook.record:  # every prototype named after its class: predict merges them
        classes = prototype_names(classes, codebook.record["merge"])
    meta["codebook"] = codebook.record
    meta["class_names"] = classes
    return codebook.arrays(), codebook
