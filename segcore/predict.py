"""Tiled prediction of a raster of any size with the numpy runtime (no torch).

``predict_raster(src, dst, model, k)`` works on the raster's *working grid* (``data.gsd`` metres
per pixel, the resolution the model was trained at; :mod:`segcore.data.raster` resamples on read)
and writes labels on the raster's own grid. It makes two passes over windowed reads:

1. **Fit, once per raster.** A grid of sample windows spread over the whole raster (at most
   ``sample_pixels`` stride-4 cells in all; the whole raster when it is that small) is embedded
   *jointly*: GroupNorm statistics are measured over all sample windows together and frozen, then
   the valid embeddings fit one set of ``k`` prototypes. Every tile uses these statistics and
   prototypes, so cluster ids agree across tiles and every norm is a per-pixel affine map.
2. **Assign, tile by tile.** Core tiles are cut in the file's own pixels; each is computed on a
   working-grid window that covers it plus a halo of ``max(halo, receptive radius)`` working pixels,
   with its origin on a multiple of 4, so its stride-4 cells are the raster's own. Beyond the raster
   edge the window is *mirrored* (:func:`read_reflected`): an edge pixel sees context that looks like
   the raster instead of the network's zero padding, and is assigned like an interior pixel. Every
   output pixel takes the argmax of the cluster probabilities interpolated (bilinearly, between cell
   centres) at its own centre. With frozen statistics the network is translation-equivariant on the
   stride-4 grid and a label depends on input within the receptive radius only, so the tiled output
   equals the output of a single tile covering the raster, pixel for pixel (``tests/test_predict.py``).
   With the region vote (``region_m``) a side inside the raster gets two region sides of context;
   regions stop at the raster edge, so a side on the edge gets only the mirrored receptive radius.

Output: ``uint8`` GeoTIFF, one band, ``0`` = nodata, clusters ``1..k``; CRS and transform copied
from the input (a raster without them stays without), written to a temp name then renamed. It
carries a colour table, a band description and the class names (:mod:`segcore.style`), optionally
internal overviews, and a QGIS style ``<stem>.qml`` is written beside it. With a ``codebook``
(:mod:`segcore.codebook`) pass 1 fits nothing: the export's frozen statistics and dataset prototypes
are used, so the same id means the same thing in every raster.

**Class prior** (``prior_rounds``, ``predict.prior_rounds``): pass 1 also estimates the raster's
class shares on its sample windows (:func:`segcore.regions.class_prior`), and every tile weights
its cells' probabilities by them before the region vote, so undecided cells join the raster's main
classes. With a codebook this is the only work of pass 1; a raster that is one sample window and
one tile is embedded once. The shares are the raster's own, so two overlapping rasters can differ
on undecided pixels; ``prior_rounds=0`` keeps ids a function of the pixels alone.
Memory depends on ``tile`` and ``sample_pixels``, not on the raster size (``docs/benchmarks.md``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from segcore.checks import check_k, check_utf8, sample_count, valid_sample_windows
from segcore.codebook import Codebook, class_groups, default_class_names
from segcore.config import Config, DataConfig
from segcore.data.raster import inspect_raster, open_raster, read_rgb, read_valid
from segcore.errors import ConfigError, RasterError
from segcore.regions import apply_prior, cell_colours, class_prior, merge_classes, region_vote, superpixels
from segcore.runtime import STRIDE, NormStats, NumpyModel, coordinate_taps, resample_argmax
from segcore.safety import PREDICT_TAG, PREDICT_TAG_VALUE, claim_output_file
from segcore.style import style_labels, write_qml

log = logging.getLogger(__name__)

SAMPLE_SIDE = 256  # side of one sample window in pixels
REGION_MAX_FRACTION = 0.25  # region-vote side at most this share of the raster's shorter side


@dataclass(frozen=True)
class RasterFit:
    """What pass 1 produced: frozen norm statistics and ``prototypes (k, E)`` for one raster."""

    stats: NormStats
    prototypes: np.ndarray
    windows: list[tuple[int, int, int, int]]
    sample_cells: int
    prior: np.ndarray | None = None  # (k,) class shares of the raster (segcore.regions.class_prior)
    window: tuple | None = None  # (Window, rgb, valid, probs) of the one sample window, when embedded with context
    merge: tuple[np.ndarray, int] | None = None  # (groups (K,), n): codebook ids merged into n named classes

    def probabilities(self, model: NumpyModel, embed: np.ndarray) -> np.ndarray:
        """``probs (K, h, w)`` of ``embed`` on the prototypes, ids named alike merged into one class."""
        probs = model.probabilities(embed, self.prototypes)
        return probs if self.merge is None else merge_classes(probs, *self.merge)


@dataclass(frozen=True)
class PredictResult:
    """Summary of one :func:`predict_raster` call (sizes in pixels)."""

    path: Path
    width: int
    height: int
    k: int
    tiles: int
    tile: int
    halo: int  # working pixels read around a tile on its sides inside the raster
    sample_cells: int
    working: str = ""  # the working grid, e.g. "490x490 px at 2.5 m" (see segcore.data.raster)
    classes: str = "raster"  # "codebook" (the export's dataset prototypes) or "raster" (fitted on this raster)
    class_names: tuple[str, ...] = ()
    prior: tuple[float, ...] = ()  # class shares of the raster that weighted the probabilities (empty: none)


def export_config(meta: dict) -> Config:
    """The config an export was trained with (its ``meta.json``), the base of every prediction with it.

    Prediction then reads rasters exactly as training did: the same working resolution
    (``data.gsd``, ``data.min_side``, ``data.source_gsd``), bands, nodata and scaling policy.
    Exports written before the config was recorded give the defaults.
    """
    try:
        return Config.from_dict(meta.get("config") or {})
    except ConfigError as exc:
        log.warning("export config not usable (%s); predicting with the defaults", exc)
        return Config()


def _round4(n: int) -> int:
    return STRIDE * math.ceil(n / STRIDE)


def sample_windows(width: int, height: int, sample_pixels: int, side: int = SAMPLE_SIDE
                   ) -> list[tuple[int, int, int, int]]:
    """``(col, row, width, height)`` windows spread evenly over the raster, origins multiples of 4.

    The windows hold about ``sample_pixels`` stride-4 cells in all; a raster with no more than
    ``16 * sample_pixels`` pixels is one window covering it.
    """
    budget = STRIDE * STRIDE * sample_pixels
    if width * height <= budget:
        return [(0, 0, width, height)]
    sw, sh = min(side, width), min(side, height)
    n = max(1, math.ceil(budget / (sw * sh)))
    gy = max(1, min(round(math.sqrt(n * height / width)), height // sh))
    gx = max(1, min(math.ceil(n / gy), width // sw))

    def origins(extent: int, size: int, count: int) -> list[int]:
        if count == 1:
            return [(extent - size) // 2 // STRIDE * STRIDE]
        return [int(i * (extent - size) / (count - 1)) // STRIDE * STRIDE for i in range(count)]

    return [(c, r, sw, sh) for r in origins(height, sh, gy) for c in origins(width, sw, gx)]


@dataclass(frozen=True)
class _Samples:
    """Pass 1's sample windows of a raster, each read with ``edge`` working pixels of context."""

    windows: list[tuple[int, int, int, int]]  # (col, row, width, height) on the working grid
    reads: list[Window]  # each window grown by the context
    images: list[np.ndarray]  # rgb of each read
    valids: list[np.ndarray]  # valid mask of each read (mirrored context is invalid)
    cells: list[np.ndarray]  # valid stride-4 cells of each window itself


def _inner_cells(edge: int, width: int, height: int) -> tuple:
    """Index of a window's own stride-4 cells in the cells of its read grown by ``edge`` pixels."""
    e = edge // STRIDE
    return np.s_[..., e : e + math.ceil(height / STRIDE), e : e + math.ceil(width / STRIDE)]


def _sample_cells(path: str | Path, info, cfg: DataConfig, sample_pixels: int, k: int, edge: int = 0) -> _Samples:
    """The sample windows of ``path`` (:func:`sample_windows`), read with ``edge`` pixels of context
    (:func:`read_reflected`: mirrored beyond the raster edge); a scan for valid pixels replaces an
    even grid that finds fewer than ``k`` valid cells."""
    def read(ds, windows: list[tuple[int, int, int, int]]) -> _Samples:
        reads = [Window(c - edge, r - edge, w + 2 * edge, h + 2 * edge) for c, r, w, h in windows]
        images, valids = zip(*(read_reflected(ds, info, cfg, win) for win in reads), strict=True)
        cells = [v[::STRIDE, ::STRIDE][_inner_cells(edge, w, h)] for v, (_, _, w, h) in zip(valids, windows,
                                                                                          strict=True)]
        return _Samples(windows, reads, list(images), list(valids), cells)

    with open_raster(path) as ds:
        samples = read(ds, sample_windows(info.width, info.height, sample_pixels))
        found_cells = sum(int(c.sum()) for c in samples.cells)
        if len(samples.windows) > 1 and found_cells < k:
            # Few, sparse valid pixels the even grid missed: sample where a coarse scan finds them.
            found = valid_sample_windows(ds, info, cfg, SAMPLE_SIDE,
                                         sample_count(info.width, info.height, sample_pixels, SAMPLE_SIDE))
            if found:
                log.info("%s: %d valid cells in the sample windows; sampling %d windows on valid pixels instead",
                         path, found_cells, len(found))
                samples = read(ds, found)
    return samples


def _valid_columns(arrays: list[np.ndarray], valids: list[np.ndarray], limit: int) -> np.ndarray:
    """The valid cells of every ``(C, h, w)`` array as ``(N, C)`` rows, every s-th kept (N <= ``limit``)."""
    pairs = zip(arrays, valids, strict=True)
    rows = np.concatenate([a.reshape(a.shape[0], -1).T[v[: a.shape[1], : a.shape[2]].reshape(-1)] for a, v in pairs])
    return rows[:: max(1, math.ceil(len(rows) / limit))]


def fit_raster(model: NumpyModel, path: str | Path, k: int, sample_pixels: int = 65536,
               data_cfg: DataConfig | None = None, prior_rounds: int = 0) -> RasterFit:
    """Pass 1 of :func:`predict_raster`: frozen norm statistics and ``k`` prototypes for ``path``,
    and with ``prior_rounds`` the raster's class shares under them."""
    cfg = data_cfg or DataConfig()
    samples = _sample_cells(path, inspect_raster(path, cfg), cfg, sample_pixels, k)
    windows, valids = samples.windows, samples.cells
    embeds, stats = model.embed_joint(samples.images)
    if len(windows) == 1:  # the whole raster: the same fit as NumpyModel.segment
        protos = model.fit_prototypes(embeds[0], k, valids[0])
        cells = int(valids[0].sum())
    else:
        sample = _valid_columns(embeds, valids, sample_pixels)
        cells = len(sample)
        if cells < k:
            raise RasterError(f"{path}: only {cells} valid pixels in the sample windows and a scan of the valid "
                              f"mask, fewer than k={k}; the raster is (almost) all nodata")
        protos = model.fit_prototypes(sample, k)
    if cells == 0:
        raise RasterError(f"{path}: every sampled pixel is nodata; nothing to predict")
    shares = None
    if prior_rounds:
        probs = [model.probabilities(z, protos) for z in embeds]
        shares = class_prior(_valid_columns(probs, valids, sample_pixels).T, prior_rounds)
    return RasterFit(stats, protos, windows, cells, shares)


def codebook_raster(model: NumpyModel, path: str | Path, codebook: Codebook, sample_pixels: int = 65536,
                    data_cfg: DataConfig | None = None, prior_rounds: int = 0, edge: int = 0,
                    merge: tuple[np.ndarray, int] | None = None) -> RasterFit:
    """Pass 1 with a codebook: its frozen statistics and prototypes, and with ``prior_rounds`` the
    raster's class shares, estimated on the same sample windows as :func:`fit_raster` (a raster with
    no valid cell gets equal shares).

    Each sample window is embedded with ``edge`` working pixels of context around it (mirrored
    beyond the raster edge, as a tile on the raster edge is), so a raster that is one sample window
    and one tile is embedded once: its probabilities are kept in ``RasterFit.window`` for the tile.
    ``merge`` (``(groups, n)``, see :func:`segcore.codebook.class_groups`) merges codebook ids named
    alike into ``n`` classes (:func:`segcore.regions.merge_classes`), before the prior and the vote.
    """
    fit = RasterFit(codebook.stats, codebook.prototypes, [], 0, merge=merge)
    if not prior_rounds:
        return fit
    cfg = data_cfg or DataConfig()
    samples = _sample_cells(path, inspect_raster(path, cfg), cfg, sample_pixels, codebook.k, edge)
    probs = [fit.probabilities(model, model.embed(rgb, codebook.stats)) for rgb in samples.images]  # (K, h4, w4)
    inner = [p[_inner_cells(edge, w, h)] for p, (_, _, w, h) in zip(probs, samples.windows, strict=True)]
    shares = class_prior(_valid_columns(inner, samples.cells, sample_pixels).T, prior_rounds)
    window = None
    if len(samples.windows) == 1:
        window = (samples.reads[0], samples.images[0], samples.valids[0], probs[0])
    return replace(fit, windows=samples.windows, sample_cells=sum(int(c.sum()) for c in samples.cells),
                   prior=shares, window=window)


def tiles(width: int, height: int, tile: int) -> list[tuple[int, int, int, int]]:
    """Core tiles ``(col, row, width, height)`` covering the raster; ``tile`` a multiple of 4."""
    return [(c, r, min(tile, width - c), min(tile, height - r))
            for r in range(0, height, tile) for c in range(0, width, tile)]


def _profile(src: rasterio.DatasetReader) -> dict:
    profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8",
               "nodata": 0, "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
               "BIGTIFF": "IF_SAFER"}
    if src.crs is not None or not src.transform.is_identity:
        profile.update(crs=src.crs, transform=src.transform)
    return profile


def predict_raster(
    src: str | Path,
    dst: str | Path,
    model: NumpyModel,
    k: int | None = None,
    *,
    tile: int = 1024,
    halo: int = 32,
    sample_pixels: int = 65536,
    data_cfg: DataConfig | None = None,
    progress: bool = True,
    region_m: float = 0.0,
    region_compactness: float = 0.4,
    prior_rounds: int = 1,
    codebook: Codebook | None = None,
    class_names: list[str] | None = None,
    overviews: bool = False,
) -> PredictResult:
    """Segment raster ``src`` into a ``uint8`` label GeoTIFF ``dst`` (0 nodata, clusters 1..k).

    The model runs on the working grid of ``data_cfg`` (``data.gsd``, see
    :mod:`segcore.data.raster`); labels are written on the input's own pixel grid, each pixel
    taking the argmax of the cluster probabilities interpolated at its centre.

    Args:
        model: a loaded export (:func:`segcore.runtime.load_export`).
        k: clusters (default ``model.max_k``; at most 255).
        tile: core tile side in working pixels (rounded up to a multiple of 4).
        halo: working pixels read around each tile; raised to the model's receptive radius when smaller.
        sample_pixels: stride-4 embedding cells sampled over the raster to fit the prototypes.
        data_cfg: band/nodata/working-resolution policy (``segcore.config.DataConfig``).
        region_m: side in metres of the regions of the region vote (:mod:`segcore.regions`); 0: off.
            On a raster of unknown resolution the working grid is taken to be ``data.gsd``. The side
            is capped at :data:`REGION_MAX_FRACTION` of the raster's shorter side.
        region_compactness: colour distance worth one region side.
        prior_rounds: EM rounds of the raster's class shares, estimated on the sample windows
            (:func:`segcore.regions.class_prior`), that weight every cell's probabilities before the
            vote; 0: off, every class equally likely.
        codebook: assign to the export's dataset codebook (:mod:`segcore.codebook`: its frozen norm
            statistics and prototypes; ``k`` is the codebook's) instead of fitting prototypes on
            this raster, so ids mean the same in every raster.
        class_names: names of classes ``1..k`` for the colour table tags and the ``.qml`` written
            beside ``dst`` (:mod:`segcore.style`); default ``class 1..k``. With a codebook a name
            may repeat: ids named alike become one class (scored by their best id, before the
            prior and the vote; :func:`segcore.regions.merge_classes`), and the output has one id
            per distinct name, in order of first appearance (:func:`segcore.codebook.class_groups`).
        overviews: build internal overviews (mode resampling) for large outputs.
    """
    from tqdm import tqdm

    check_utf8(src)
    claim_output_file(dst, inputs=[src], what="output")  # never the input, a directory or a user's file
    cfg = data_cfg or DataConfig()
    if codebook is not None:
        if k is not None and int(k) != codebook.k:
            raise ConfigError(f"k={k}, but the export's codebook has k={codebook.k}; drop k, predict per raster, "
                              "or re-export with another codebook k")
        k = codebook.k
    k = model.max_k if k is None else int(k)
    if codebook is None:
        k = check_k(k, model.max_k)
    names = list(class_names) if class_names else default_class_names(k)
    if len(names) != k:
        raise ConfigError(f"{len(names)} class names for k={k} classes; give exactly one name per class")
    names, groups = class_groups(names, mergeable=codebook is not None)
    merge = None if groups is None else (groups, len(names))
    tile = _round4(max(tile, STRIDE))
    halo = _round4(max(halo, model.receptive_radius()))
    if prior_rounds < 0:
        raise ConfigError(f"predict.prior_rounds={prior_rounds} must be 0 (off) or more")
    if codebook is not None:
        fit = codebook_raster(model, src, codebook, sample_pixels, cfg, prior_rounds, halo, merge)
    else:
        fit = fit_raster(model, src, k, sample_pixels, cfg, prior_rounds)
    mode = "raster" if codebook is None else "codebook"
    info = inspect_raster(src, cfg)
    vote = vote_regions(region_m, region_compactness, info.gsd or cfg.gsd, info.width, info.height)
    # Context a tile needs on a side inside the raster (two region sides for the vote); on a side at
    # the raster edge the network's receptive radius, mirrored, is enough: regions stop at the edge.
    inner = max(halo, _round4(math.ceil(2 * vote[0] * STRIDE))) if vote else halo
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp.tif")
    native_tile = max(STRIDE, round(tile * info.factor_x)), max(STRIDE, round(tile * info.factor_y))
    cores = [(c, r, min(native_tile[0], info.native_width - c), min(native_tile[1], info.native_height - r))
             for r in range(0, info.native_height, native_tile[1])
             for c in range(0, info.native_width, native_tile[0])]
    try:
        with open_raster(src) as ds, warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(tmp, "w", **_profile(ds)) as out:
                out.update_tags(**{PREDICT_TAG: PREDICT_TAG_VALUE})
                if fit.prior is not None:
                    out.update_tags(class_prior=json.dumps([round(float(p), 6) for p in fit.prior]))
                for core in tqdm(cores, desc="predict", unit="tile", disable=not progress):
                    out.write(_predict_tile(model, ds, info, cfg, fit, core, (halo, inner), vote), 1,
                              window=Window(*core))
        style_labels(tmp, names, mode, overviews=overviews)
        os.replace(tmp, dst)
        write_qml(dst, names)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("wrote %s (%dx%d px, working grid %dx%d, %d tiles, halo %d)", dst, info.native_width,
             info.native_height, info.width, info.height, len(cores), inner)
    working = f"{info.width}x{info.height} px" + (f" at {info.gsd:.3g} m" if info.gsd else "")
    return PredictResult(dst, info.native_width, info.native_height, len(names), len(cores), tile, inner,
                         fit.sample_cells, working, mode, tuple(names),
                         () if fit.prior is None else tuple(round(float(p), 6) for p in fit.prior))


def vote_regions(region_m: float, compactness: float, gsd: float | None, width: int, height: int
                 ) -> tuple[float, float] | None:
    """``(side in cells, compactness)`` of the region vote on a working grid of ``width x height``
    pixels at ``gsd`` metres per pixel (unknown: 1), or None when ``region_m`` is 0."""
    if region_m <= 0:
        return None
    side = region_m / ((gsd or 1.0) * STRIDE)
    # Never more than a quarter of the raster: a 30 m drone chip is not voted into one label.
    return min(side, REGION_MAX_FRACTION * min(width, height) / STRIDE), compactness


def grouped_probabilities(probs: np.ndarray, rgb: np.ndarray, valid: np.ndarray, prior: np.ndarray | None,
                          vote: tuple[float, float] | None, origin: tuple[float, float]) -> np.ndarray:
    """``probs (K, h, w)`` of a window's cells weighted by the raster's class ``prior``, then voted
    within regions (``vote`` from :func:`vote_regions`) drawn on the window's ``rgb``; ``origin`` is
    the global cell coordinate of its first cell (:func:`segcore.regions.superpixels`)."""
    if prior is not None:
        probs = apply_prior(probs, prior)
    if vote is not None:
        cells = probs.shape[1:]
        regions = superpixels(cell_colours(rgb, cells), vote[0], origin, vote[1])
        probs = region_vote(probs, regions, valid[::STRIDE, ::STRIDE][: cells[0], : cells[1]])
    return probs


def segment_image(model: NumpyModel, image: np.ndarray, valid: np.ndarray | None = None, *, k: int | None = None,
                  codebook: Codebook | None = None, class_names: list[str] | None = None, gsd: float | None = None,
                  halo: int = 32, sample_pixels: int = 65536, region_m: float = 0.0, region_compactness: float = 0.4,
                  prior_rounds: int = 1) -> np.ndarray:
    """Class ids ``int64 (H, W)`` (``0..n-1``) of one in-memory image on the working grid, as
    :func:`predict_raster` labels a raster holding it (minus one, invalid pixels included).

    The same steps on one window: mirrored context of the halo, the codebook's frozen statistics
    and prototypes with its ids named alike (``class_names``) merged (else ``k`` prototypes fitted
    on the image; names do not change per-image ids, so they are not taken), the class prior
    over the image's valid cells, the region vote at ``gsd`` metres per pixel (unknown: 1; seeds
    anchored at the image's corner, as on a raster without georeferencing), and every pixel the
    argmax at its centre. On an image of at most ``16 * sample_pixels`` pixels the ids equal
    :func:`predict_raster`'s (``tests/test_predict.py``); used to score an export as users get it
    (:class:`segcore.evaluate.ExportPredictor`).
    """
    image = np.asarray(image)
    h, w = image.shape[:2]
    valid = np.ones((h, w), bool) if valid is None else np.asarray(valid, bool)
    halo = _round4(max(halo, model.receptive_radius()))
    cells = valid[::STRIDE, ::STRIDE]
    bare = None  # per raster: the image's own embedding, without context (predict_raster's sample window)
    if codebook is not None:
        names, groups = class_groups(list(class_names) if class_names else default_class_names(codebook.k))
        fit = RasterFit(codebook.stats, codebook.prototypes, [], 0, merge=None if groups is None else
                        (groups, len(names)))
    else:
        (bare,), stats = model.embed_joint([image])
        fit = RasterFit(stats, model.fit_prototypes(bare, check_k(k or model.max_k, model.max_k), cells), [], 0)
    rgb, wide = mirror_pad(image, valid, [(halo, halo), (halo, halo)])
    probs = fit.probabilities(model, model.embed(rgb, fit.stats))
    prior = None
    if prior_rounds and cells.any():
        shares_of = probs[_inner_cells(halo, w, h)] if bare is None else model.probabilities(bare, fit.prototypes)
        prior = class_prior(_valid_columns([shares_of], [cells], sample_pixels).T, prior_rounds)
    vote = vote_regions(region_m, region_compactness, gsd, w, h)
    probs = grouped_probabilities(probs, rgb, wide, prior, vote, (-halo / STRIDE, -halo / STRIDE))
    centres = [(np.arange(n) + 0.5 + halo) / STRIDE - 0.5 for n in (h, w)]
    return resample_argmax(probs, coordinate_taps(probs.shape[1], centres[0]), coordinate_taps(probs.shape[2],
                                                                                              centres[1]))


def read_reflected(ds, info, cfg: DataConfig, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Working-grid RGB ``(h, w, 3)`` and valid mask of ``window``, mirrored where it leaves the raster.

    Beyond the raster edge the image is reflected (``numpy.pad`` ``reflect``) rather than zero, so a
    pixel on the raster edge is embedded with context that looks like the rest of the raster; the
    mirrored pixels are marked invalid. Reflection needs the raster to be larger than the margin;
    where it is not, the remaining margin is edge-replicated.
    """
    col, row, w, h = (int(v) for v in (window.col_off, window.row_off, window.width, window.height))
    c0, r0 = max(col, 0), max(row, 0)
    c1, r1 = min(col + w, info.width), min(row + h, info.height)
    rgb, valid = read_rgb(ds, info, Window(c0, r0, c1 - c0, r1 - r0), cfg)
    return mirror_pad(rgb, valid, [(r0 - row, row + h - r1), (c0 - col, col + w - c1)])


def mirror_pad(rgb: np.ndarray, valid: np.ndarray, pads: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """``rgb (H, W, 3)`` and ``valid`` grown by ``pads`` (``[(top, bottom), (left, right)]``): the
    image reflected, edge-replicated where the margin exceeds it; the added pixels are invalid."""
    if not any(a or b for a, b in pads):
        return rgb, valid
    reflect = [(min(a, n - 1), min(b, n - 1)) for (a, b), n in zip(pads, valid.shape, strict=True)]
    rgb = np.pad(rgb, [*reflect, (0, 0)], mode="reflect")
    rest = [(a - ra, b - rb) for (a, b), (ra, rb) in zip(pads, reflect, strict=True)]
    rgb = np.pad(rgb, [*rest, (0, 0)], mode="edge")
    valid = np.pad(valid, pads, constant_values=False)
    return rgb, valid


def _predict_tile(model: NumpyModel, ds, info, cfg: DataConfig, fit: RasterFit,
                  core: tuple[int, int, int, int], halo: tuple[int, int],
                  vote: tuple[float, float] | None = None) -> np.ndarray:
    """``uint8 (h, w)`` labels of one core tile in the file's own pixels.

    ``halo`` is ``(edge, inner)``: the working-grid window read covers the tile's pixels plus
    ``inner`` on every side that lies inside the raster and ``edge`` (the network's receptive
    radius) on a side at the raster edge, where the window is mirrored (:func:`read_reflected`); a
    region never crosses the raster edge, so mirrored context beyond the network's needs would only
    cost time. The window's origin is a multiple of 4 (its stride-4 cells are the raster's).
    """
    col, row, w, h = core
    fx, fy = info.factor_x, info.factor_y
    edge, inner = halo
    left, top = (edge if col == 0 else inner), (edge if row == 0 else inner)
    right = edge if col + w >= info.native_width else inner
    bottom = edge if row + h >= info.native_height else inner
    x0 = STRIDE * math.floor((col / fx - left) / STRIDE)
    y0 = STRIDE * math.floor((row / fy - top) / STRIDE)
    x1, y1 = math.ceil((col + w) / fx) + right, math.ceil((row + h) / fy) + bottom
    window = Window(x0, y0, x1 - x0, y1 - y0)
    if fit.window is not None and fit.window[0] == window:  # pass 1 embedded this very window
        _, rgb, valid, probs = fit.window
    else:
        rgb, valid = read_reflected(ds, info, cfg, window)
        probs = fit.probabilities(model, model.embed(rgb, fit.stats))  # (K, h4, w4)
    oy, ox = _map_offset(info)
    probs = grouped_probabilities(probs, rgb, valid, fit.prior, vote, ((y0 + oy) / STRIDE, (x0 + ox) / STRIDE))
    # Native pixel centres in working pixels, then in cells of this window (cell j centred at 4j + 2).
    cols = ((np.arange(col, col + w) + 0.5) / fx - x0) / STRIDE - 0.5
    rows = ((np.arange(row, row + h) + 0.5) / fy - y0) / STRIDE - 0.5
    labels = resample_argmax(probs, coordinate_taps(probs.shape[1], rows), coordinate_taps(probs.shape[2], cols))
    core_valid = _native_valid(ds, info, cfg, core, valid, (x0, y0))
    return np.where(core_valid, labels + 1, 0).astype(np.uint8)


def _map_offset(info) -> tuple[float, float]:
    """Working-grid pixel offset ``(rows, cols)`` of the raster's origin from the map origin (0, 0 when
    not georeferenced): region seeds sit on a grid anchored to map coordinates, so overlapping
    rasters of one area get the same regions."""
    if info.transform is None:
        return 0.0, 0.0
    a, _, c, _, e, f = info.transform[:6]
    return (f / e if e else 0.0), (c / a if a else 0.0)


def _native_valid(ds, info, cfg: DataConfig, core: tuple[int, int, int, int], valid: np.ndarray,
                  origin: tuple[int, int]) -> np.ndarray:
    """``bool (h, w)`` valid mask of ``core`` in the file's own pixels."""
    col, row, w, h = core
    if not info.resampled:
        x0, y0 = origin
        return valid[row - y0 : row - y0 + h, col - x0 : col - x0 + w]
    native = replace(info, width=info.native_width, height=info.native_height, factor_x=1.0, factor_y=1.0)
    return read_valid(ds, native, Window(col, row, w, h), cfg)
