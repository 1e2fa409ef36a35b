"""Evaluation over a split: ``metrics.json``, ``per_image.csv``, ``summary.md`` and overlay PNGs.

Protocol (``/work/shared/data/README.md``): every image is downsampled to at most ``eval.max_side``
px by keeping every ``s``-th pixel, ``s = ceil(max(H, W) / max_side)``. Per image, the model
produces ``k = eval.k`` segments (0: the number of classes); segments are matched one-to-one to
classes by the Hungarian method on pixels with label > 0 (:mod:`segcore.metrics`) and the matched
confusion matrices are summed over the split. Reported (flat keys, the MLflow metric names):

* ``val/miou`` (over classes present), ``val/pixel_acc``, ``val/iou/<id>``, ``val/unmatched_frac``;
* ``val/majority/miou``, ``val/majority/pixel_acc``, ``val/majority/iou/<id>``: **many-to-one**
  (each segment to its majority class) with ``k = model.max_k`` segments, a looser score;
* ``proxy/utilization``, ``proxy/speckle``, ``proxy/boundary_density`` (label-free, at ``k``) and
  ``proxy/two_view_consistency``: the image and its transposed copy (hflip then rot90) are segmented
  independently, the second map is brought back, its ids are matched one-to-one to the first
  map's (Hungarian on co-occurrence) and the share of valid pixels that agree is reported;
* ``val/k``, ``val/majority_k``, ``val/images``, ``cost/seconds_per_image`` (the k-segment pass);
* ``val/dataset/miou``, ``val/dataset/pixel_acc``, ``val/dataset/iou/<id>``: for a model whose ids
  mean the same class in every image (an export with a codebook), **one** matching of ids to
  classes for the whole split (:class:`~segcore.metrics.PooledIoU`): the legend a user reads, which
  one label per image cannot game.

An export directory is scored the way ``segcore predict`` runs it (:class:`ExportPredictor`: its
codebook, class prior and region vote, at the image's ground resolution); a training checkpoint by
its own per-image clusters (:class:`TorchPredictor`), the view of training.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segcore.config import Config
from segcore.errors import ConfigError
from segcore.metrics import MatchedIoU, PooledIoU, ProxyMetrics, kmeans_rgb_labels, scores, two_view_consistency
from segcore.overlays import matched_classes, render_overlay, save_png

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalImage:
    """One downsampled evaluation image: ``image uint8 (H, W, 3)``, ``target int64 (H, W)`` class ids
    (``<= 0`` ignored), ``valid bool (H, W)``; ``stride`` is the downsampling step ``s``; ``gsd``
    the metres per pixel of ``image`` as scored (0: unknown).

    ``full``: ``(image, valid)`` before the downsampling (``None``: not kept). A predictor that runs
    as ``segcore predict`` does (:class:`ExportPredictor`) segments it and is scored on every
    ``s``-th pixel of its map, the protocol's way, instead of seeing ``s`` times coarser pixels.
    """

    name: str
    image: np.ndarray
    target: np.ndarray
    valid: np.ndarray
    stride: int = 1
    gsd: float = 0.0
    full: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class EvalData:
    """A split to evaluate: ``images()`` yields :class:`EvalImage` lazily (one at a time in memory)."""

    name: str
    num_classes: int
    images: Callable[[], Iterator[EvalImage]]


def downsample_stride(height: int, width: int, max_side: int) -> int:
    """``s = ceil(max(H, W) / max_side)`` (at least 1)."""
    return max(1, math.ceil(max(height, width) / max(max_side, 1)))


# -- predictors ------------------------------------------------------------------------------------
class KMeansBaseline:
    """The README's colour baseline: k-means on RGB pixels (:func:`segcore.metrics.kmeans_rgb_labels`)."""

    name = "kmeans-rgb"

    def __init__(self, max_k: int, seed: int = 0):
        self.max_k, self.seed = max_k, seed

    def segment(self, image: np.ndarray, k: int, valid: np.ndarray) -> np.ndarray:
        labels = kmeans_rgb_labels(image, k, self.seed, valid if valid.any() else None)
        return np.maximum(labels, 0)


class ConstantBaseline:
    """One label for every pixel of an image: the floor of per-image matching. On land-cover scenes
    that are mostly one class it scores high per image (``docs/benchmarks.md``, "Class prior, and
    what a constant scores"); a model's per-image mIoU means something only above it."""

    name = "one-label-per-image"
    max_k = 1
    fixed_ids = True

    def segment(self, image: np.ndarray, k: int, valid: np.ndarray) -> np.ndarray:
        return np.zeros(image.shape[:2], np.int64)


class ExportPredictor:
    """An export run the way ``segcore predict`` runs it (:func:`segcore.predict.segment_image`):
    its codebook when it has one, else prototypes fitted per image, then the class prior and the
    region vote of the ``predict`` section of ``cfg`` (default: the export's own config, as
    ``segcore predict`` uses it), at the image's ground resolution (unknown: ``data.gsd``).

    ``fixed_ids``: the ids mean the same class in every image (a codebook), so the scorer ignores
    the ``k`` it asks for and also matches ids to classes once for the whole split.
    """

    name = "segcore-predict"
    takes_gsd = True

    def __init__(self, export_dir: str | Path, cfg: Config | None = None):
        from segcore.codebook import class_groups
        from segcore.predict import export_config
        from segcore.products import class_plan
        from segcore.runtime import load_export

        self.model = load_export(export_dir)
        self.cfg = cfg or export_config(self.model.meta)
        self.plan = class_plan(self.model, export_dir, self.cfg.predict.classes, None, self.cfg.predict.class_names)
        self.fixed_ids = self.plan.codebook is not None
        self.max_k = len(class_groups(self.plan.names)[0]) if self.fixed_ids else self.model.max_k

    def segment(self, image: np.ndarray, k: int, valid: np.ndarray, gsd: float = 0.0) -> np.ndarray:
        from segcore.predict import segment_image

        p = self.cfg.predict
        return segment_image(self.model, image, valid, k=None if self.fixed_ids else k, codebook=self.plan.codebook,
                             class_names=self.plan.names, gsd=gsd or self.cfg.data.gsd,
                             halo=p.halo, sample_pixels=p.sample_pixels, region_m=p.region_m,
                             region_compactness=p.region_compactness, prior_rounds=p.prior_rounds)


def _segment(predictor, image: np.ndarray, k: int, valid: np.ndarray, gsd: float) -> np.ndarray:
    if getattr(predictor, "takes_gsd", False):
        return predictor.segment(image, k, valid, gsd=gsd)
    return predictor.segment(image, k, valid)


def _predict(predictor, item: EvalImage, k: int, transposed: bool = False) -> np.ndarray:
    """Labels of ``item`` on its scored ``(H, W)`` grid. A predictor that runs as ``segcore predict``
    does (``takes_gsd``) segments ``item.full`` when it is kept, at its own ground resolution, and
    its map is read on every ``s``-th pixel. ``transposed``: the second view of the consistency
    check (:func:`_transposed`), mapped back."""
    full = item.full is not None and getattr(predictor, "takes_gsd", False)
    image, valid = item.full if full else (item.image, item.valid)
    gsd = item.gsd / item.stride if full else item.gsd
    if transposed:
        labels = _untransposed(_segment(predictor, _transposed(image), k, _transposed(valid), gsd))
    else:
        labels = _segment(predictor, image, k, valid, gsd)
    return labels[:: item.stride, :: item.stride] if full else labels


class TorchPredictor:
    """A :class:`~segcore.models.segmenter.MonolithicSegmenter`, run on the CPU in eval mode."""

    name = "torch"

    def __init__(self, model):
        self.model, self.max_k = model.eval(), model.head.max_k

    def segment(self, image: np.ndarray, k: int, valid: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)[None]
        with torch.no_grad():
            out = self.model(x, k=k, valid=torch.from_numpy(valid)[None])
        return out["labels"][0].numpy()


def resolve_predictor(model_or_checkpoint: Any, cfg: Config):
    """``"kmeans"``, ``"constant"`` (:class:`ConstantBaseline`), a segmenter module, an export
    directory (:class:`ExportPredictor`), a checkpoint file, or any predictor: an object with
    ``max_k`` and ``segment(image uint8 (H, W, 3), k, valid bool (H, W)) -> int (H, W)`` (a
    :class:`~segcore.runtime.NumpyModel` is one: the network's per-image clusters, without the
    codebook, prior or vote of ``segcore predict``)."""
    if isinstance(model_or_checkpoint, str) and model_or_checkpoint == "kmeans":
        return KMeansBaseline(cfg.model.max_k, cfg.train.seed)
    if isinstance(model_or_checkpoint, str) and model_or_checkpoint == "constant":
        return ConstantBaseline()
    if hasattr(model_or_checkpoint, "segment") and hasattr(model_or_checkpoint, "max_k"):
        return model_or_checkpoint  # a NumpyModel or any object with segment(image, k, valid) and max_k
    if hasattr(model_or_checkpoint, "head") and hasattr(model_or_checkpoint, "student"):
        return TorchPredictor(model_or_checkpoint)
    path = Path(model_or_checkpoint)
    if path.is_dir():
        return ExportPredictor(path)
    from segcore.checkpoint import load_checkpoint
    from segcore.models import build_segmenter

    state = load_checkpoint(path)
    model = build_segmenter(Config.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    return TorchPredictor(model)


# -- evaluation -------------------------------------------------------------------------------------
def _transposed(image: np.ndarray) -> np.ndarray:
    """hflip then rot90 (k=1) of an ``(H, W, ...)`` array: the second view of the consistency check."""
    return np.ascontiguousarray(np.rot90(np.flip(image, axis=1), 1, axes=(0, 1)))


def _untransposed(labels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.flip(np.rot90(labels, -1, axes=(0, 1)), axis=1))


def view_consistency(predictor, item: EvalImage, k: int, labels_a: np.ndarray) -> float:
    """Agreement of ``labels_a`` with the labels of the transposed view mapped back (ids matched)."""
    labels_b = _predict(predictor, item, k, transposed=True)
    mapping = matched_classes(labels_b, np.where(item.valid, labels_a + 1, 0), int(labels_a.max()) + 1)
    lut = np.full(int(labels_b.max()) + 1, -1, np.int64)
    for seg, cls in mapping.items():
        lut[seg] = cls - 1
    return two_view_consistency(labels_a, lut[labels_b], item.valid)


def evaluate(model_or_checkpoint: Any, data: EvalData, cfg: Config, out_dir: str | Path) -> dict[str, float]:
    """Score a model on ``data`` and write the report files into ``out_dir``.

    Args:
        model_or_checkpoint: see :func:`resolve_predictor`.
        data: the split (:func:`synthetic_data`, :func:`raster_data`, :func:`shard_data`).
        cfg: uses ``cfg.eval`` (``k``, ``num_overlays``, ``speckle_px``) and ``cfg.model.max_k``.
        out_dir: receives ``metrics.json``, ``per_image.csv``, ``summary.md``, ``overlays/<image>.png``.

    Returns:
        The flat metrics dict written to ``metrics.json``.
    """
    return evaluate_many([(model_or_checkpoint, out_dir, cfg.eval.num_overlays)], data, cfg)[0]


def evaluate_many(models: list[tuple[Any, str | Path, int]], data: EvalData, cfg: Config) -> list[dict[str, float]]:
    """:func:`evaluate` several models in **one pass** over ``data``: each image is read (decoded from
    its shard, resampled) once and segmented by every model, so comparing models costs one read.

    Args:
        models: ``(model_or_checkpoint, out_dir, num_overlays)`` per model (see :func:`evaluate`).

    Returns:
        Each model's flat metrics, in the order given.
    """
    scorers = [_Scorer(resolve_predictor(model, cfg), data, cfg, Path(out), overlays)
               for model, out, overlays in models]
    n = 0
    for item in data.images():
        for scorer in scorers:
            scorer.update(item)
        n += 1
    if not n:
        raise ConfigError(f"evaluation data {data.name} holds no images")
    return [scorer.finish() for scorer in scorers]


class _Scorer:
    """One model's running scores, per-image rows and overlays over an evaluation pass."""

    def __init__(self, predictor, data: EvalData, cfg: Config, out: Path, num_overlays: int):
        self.predictor, self.data, self.out, self.num_overlays = predictor, data, out, num_overlays
        fixed = getattr(predictor, "fixed_ids", False)  # ids set by the model (a codebook), not by k
        self.k = k = predictor.max_k if fixed else cfg.eval.k or data.num_classes
        self.big_k = max(predictor.max_k, k) if not isinstance(predictor, KMeansBaseline) else cfg.model.max_k
        if k > predictor.max_k:
            raise ConfigError(f"eval.k={k} exceeds the model's max_k={predictor.max_k}; set eval.k lower")
        (out / "overlays").mkdir(parents=True, exist_ok=True)
        self.matched, self.majority = MatchedIoU(data.num_classes), MatchedIoU(data.num_classes)
        self.pooled = PooledIoU(predictor.max_k, data.num_classes) if fixed else None
        self.proxy = ProxyMetrics(max(k, 2), cfg.eval.speckle_px)  # utilisation of one label: 0
        self.rows: list[dict[str, Any]] = []
        self.consistency: list[float] = []
        self.seconds = 0.0

    def update(self, item: EvalImage) -> None:
        predictor, k = self.predictor, self.k
        if item.stride > 1 and item.full is None and getattr(predictor, "takes_gsd", False) and not self.rows:
            side = max(item.image.shape[:2]) * item.stride
            log.warning("%s: %s is downsampled %dx before the model sees it, so its pixels are %dx coarser than "
                        "segcore predict gives it; eval.max_side=%d (or keep_full=True, as segcore eval --export "
                        "does) scores it at its working resolution",
                        self.data.name, item.name, item.stride, item.stride, side)
        t0 = time.perf_counter()
        pred = _predict(predictor, item, k)
        self.seconds += time.perf_counter() - t0
        conf = self.matched.update(pred, item.target)
        if self.pooled is not None:
            self.pooled.update(pred, item.target)
        pred_big = pred if self.big_k == k else _predict(predictor, item, self.big_k)
        self.majority.update(pred_big, item.target)
        one = self.proxy.update(pred, item.valid)
        self.consistency.append(view_consistency(predictor, item, k, pred))
        own = scores(conf)
        self.rows.append({"image": item.name, "height": item.image.shape[0], "width": item.image.shape[1],
                          "stride": item.stride, "miou": own["miou"], "pixel_acc": own["pixel_acc"],
                          "utilization": one["proxy/utilization"], "speckle": one["proxy/speckle"],
                          "boundary_density": one["proxy/boundary_density"],
                          "two_view_consistency": self.consistency[-1]})
        if len(self.rows) <= self.num_overlays:
            mapping = matched_classes(pred, item.target, self.data.num_classes)
            save_png(self.out / "overlays" / f"{_safe(item.name)}.png",
                     render_overlay(item.image, pred, item.target, item.valid, mapping))

    def finish(self) -> dict[str, float]:
        import pandas as pd

        out, data = self.out, self.data
        metrics = _collect(self.matched, self.majority, self.proxy, self.consistency, self.k, self.big_k,
                           len(self.rows), self.seconds)
        if self.pooled is not None and "val/miou" in metrics:
            metrics.update({f"val/dataset/{key}": v for key, v in self.pooled.compute().items()})
        _write_text(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
        _write_text(out / "per_image.csv", pd.DataFrame(self.rows).to_csv(index=False, float_format="%.6g"))
        method = getattr(self.predictor, "name", type(self.predictor).__name__)
        _write_text(out / "summary.md", summary_markdown(metrics, data.name, method))
        log.info("evaluated %d images of %s with %s: mIoU %.3f, pixel acc %.3f", len(self.rows), data.name, method,
                 metrics.get("val/miou", math.nan), metrics.get("val/pixel_acc", math.nan))
        return metrics


def _collect(matched: MatchedIoU, majority: MatchedIoU, proxy: ProxyMetrics, consistency: list[float],
             k: int, big_k: int, n: int, seconds: float) -> dict[str, float]:
    metrics: dict[str, float] = {}
    if matched.confusion.sum() > 0:
        metrics.update({f"val/{key}": v for key, v in matched.compute().items() if not key.startswith("majority/")})
        metrics.update({f"val/{key}": v for key, v in majority.compute().items() if key.startswith("majority/")})
    else:  # unlabelled data: scores against labels would read as 0, which is not a measurement
        log.warning("no labelled pixels (label > 0) in the evaluation data: reporting proxy metrics only")
    metrics.update(proxy.compute())
    metrics["proxy/two_view_consistency"] = float(np.mean(consistency))
    metrics.update({"val/k": float(k), "val/majority_k": float(big_k), "val/images": float(n),
                    "cost/seconds_per_image": seconds / n})
    return metrics


def _fmt(metrics: dict[str, float], key: str) -> str:
    return f"{metrics[key]:.3f}" if key in metrics else "no labels"


def summary_markdown(metrics: dict[str, float], data_name: str, method: str) -> str:
    """A small markdown table of the headline numbers."""
    k, big_k = int(metrics["val/k"]), int(metrics["val/majority_k"])
    lines = [f"# Evaluation: {method} on {data_name} ({int(metrics['val/images'])} images)", "",
             "| metric | value |", "|---|---|",
             f"| mIoU (Hungarian one-to-one, k={k}) | {_fmt(metrics, 'val/miou')} |",
             f"| pixel accuracy (Hungarian, k={k}) | {_fmt(metrics, 'val/pixel_acc')} |",
             f"| mIoU (majority many-to-one, k={big_k}) | {_fmt(metrics, 'val/majority/miou')} |",
             *([f"| mIoU (one matching for the whole split) | {metrics['val/dataset/miou']:.3f} |"]
               if "val/dataset/miou" in metrics else []),
             f"| utilization | {metrics['proxy/utilization']:.3f} |",
             f"| speckle | {metrics['proxy/speckle']:.3f} |",
             f"| boundary density | {metrics['proxy/boundary_density']:.3f} |",
             f"| two-view consistency | {metrics['proxy/two_view_consistency']:.3f} |",
             f"| seconds per image (CPU) | {metrics['cost/seconds_per_image']:.3f} |", ""]
    per_class = sorted((int(key.rsplit("/", 1)[1]), v) for key, v in metrics.items() if key.startswith("val/iou/"))
    if per_class:
        lines += ["| class | IoU |", "|---|---|"] + [f"| {c} | {v:.3f} |" for c, v in per_class] + [""]
    return "\n".join(lines)


# -- data sources -----------------------------------------------------------------------------------
def synthetic_data(
    seed: int, count: int = 4, size: int = 256, max_side: int = 512, keep_full: bool = False
) -> EvalData:
    """``count`` generated scenes of ``size`` px; scene ``i`` uses seed ``scene_seed(seed, i)``;
    ``keep_full``: every image also carries its undownsampled grid (:attr:`EvalImage.full`).

    Training scenes use ``scene_seed(TRAIN_NAMESPACE + train_seed, i)``
    (:mod:`segcore.data.sources`), so evaluation seeds below ``TRAIN_NAMESPACE`` never draw a
    training scene.
    """
    from segcore.data.sources import TRAIN_NAMESPACE
    from segcore.data.synthetic import CLASS_NAMES, SYNTHETIC_GSD, generate_scene, scene_seed

    if not 0 <= seed < TRAIN_NAMESPACE:
        raise ConfigError(f"evaluation seed {seed} must be in 0..{TRAIN_NAMESPACE - 1} (larger seeds are training's)")

    def images() -> Iterator[EvalImage]:
        for i in range(count):
            scene = generate_scene(size, scene_seed(seed, i))
            s = downsample_stride(size, size, max_side)
            full = (scene.image, np.ones(scene.labels.shape, bool)) if keep_full else None
            yield EvalImage(f"synthetic-{seed}-{i:03d}", scene.image[::s, ::s], scene.labels[::s, ::s].astype(np.int64),
                            np.ones(scene.labels[::s, ::s].shape, bool), s, SYNTHETIC_GSD * s, full)

    return EvalData(f"synthetic:seed={seed}", len(CLASS_NAMES), images)


def _read_strided(
    image_path: str, label_path: str | None, max_side: int, data_cfg, keep_full: bool = False
) -> EvalImage:
    """Every ``s``-th pixel of a raster and its labels, read in row strips (never the whole raster,
    unless ``keep_full`` asks for the image on the working grid as well)."""
    from rasterio.windows import Window

    from segcore.data.raster import check_label, inspect_raster, open_raster, read_label, read_rgb

    info = inspect_raster(image_path, data_cfg)
    if label_path:
        check_label(label_path, info)  # size, CRS and transform must match the image
    s = downsample_stride(info.height, info.width, max_side)
    strip = s * max(1, 256 // s)
    rgbs, valids, targets, full = [], [], [], []
    with open_raster(image_path) as ds:
        for row in range(0, info.height, strip):
            window = Window(0, row, info.width, min(strip, info.height - row))
            rgb, valid = read_rgb(ds, info, window, data_cfg)
            rgbs.append(rgb[::s, ::s])
            valids.append(valid[::s, ::s])
            if keep_full:
                full.append((rgb, valid))
    if label_path:
        with open_raster(label_path) as ds:
            for row in range(0, info.height, strip):
                window = Window(0, row, info.width, min(strip, info.height - row))
                targets.append(read_label(ds, window, info)[::s, ::s])
    valid = np.concatenate(valids)
    target = np.concatenate(targets) if targets else np.zeros(valid.shape, np.int64)
    kept = (np.concatenate([f[0] for f in full]), np.concatenate([f[1] for f in full])) if keep_full else None
    return EvalImage(Path(image_path).stem, np.concatenate(rgbs), np.where(valid, target, 0), valid, s,
                     (info.gsd or 0.0) * s, kept)


def classes_csv_count(base: str | Path) -> int:
    """The largest id in the first column (``id`` or ``index``) of ``base/classes.csv``; 0 when absent."""
    import pandas as pd

    path = Path(base) / "classes.csv"
    if not path.is_file():
        return 0
    ids = pd.to_numeric(pd.read_csv(path).iloc[:, 0], errors="coerce")
    return int(ids.max()) if ids.notna().any() else 0


def raster_data(path: str | Path, max_side: int = 512, num_classes: int = 0, data_cfg=None,
                keep_full: bool = False) -> EvalData:
    """GeoTIFFs with labels: a manifest CSV (``image,label`` columns) or a directory with
    ``images/`` and ``labels/`` holding files of the same names. ``keep_full``: every image also
    carries its working grid before the protocol's downsampling (:attr:`EvalImage.full`).

    ``num_classes`` 0: the largest id in the first column of ``classes.csv`` beside the
    manifest/directory (``id,name`` or ``index,name``; 0 = ignore), else the largest label found.
    """
    from segcore.config import DataConfig
    from segcore.data.raster import RasterSource, read_manifest_csv

    data_cfg = data_cfg or DataConfig()
    path = Path(path)
    if path.is_dir():
        images = sorted(p for p in (path / "images").glob("*.tif*"))
        sources = [RasterSource(str(p), str(path / "labels" / p.name)) for p in images]
        base = path
    else:
        sources, base = read_manifest_csv(path), path.parent
    if not sources:
        raise ConfigError(f"{path}: no images to evaluate (expected a manifest CSV or images/ + labels/)")
    num_classes = num_classes or classes_csv_count(base)

    def images() -> Iterator[EvalImage]:
        for src in sources:
            yield _read_strided(src.image, src.label, max_side, data_cfg, keep_full)

    if not num_classes:
        num_classes = max(int(item.target.max()) for item in images())
    return EvalData(str(path), max(num_classes, 1), images)


def shard_data(root: str | Path, split: str, cfg: Config, num_classes: int) -> EvalData:
    """Tiles of a built shard split (``<processed_root>/<dataset>``), each downsampled by the protocol."""
    from segcore.data.shard_dataset import ShardDataset

    if num_classes < 1:
        raise ConfigError("shard evaluation needs eval.num_classes (the shards do not record a class count)")
    from segcore.data.shard_index import read_manifest

    dataset = ShardDataset(root, split, cfg.replace(**{"data.require_slic": False}))
    # Metres per working pixel of each source (recorded by the build; older shards: data.gsd).
    gsd = {src["image"]: src.get("gsd") or cfg.data.gsd for src in read_manifest(root).get("sources", [])}

    def images() -> Iterator[EvalImage]:
        for shard, rows in enumerate(dataset.index):
            for position in range(len(rows)):
                sample = dataset.load(shard, position)
                rgb = np.rint(sample["image"].numpy().transpose(1, 2, 0) * 255.0).astype(np.uint8)
                s = downsample_stride(rgb.shape[0], rgb.shape[1], cfg.eval.max_side)
                yield EvalImage(str(sample["meta"]["tile_id"]), rgb[::s, ::s], sample["target"].numpy()[::s, ::s],
                                sample["valid"].numpy()[::s, ::s], s,
                                gsd.get(sample["meta"]["source"], cfg.data.gsd) * s)

    return EvalData(f"{root}:{split}", num_classes, images)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
