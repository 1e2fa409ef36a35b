"""Typed, frozen configuration for every segcore stage.

A :class:`Config` is built once, in this order, and then passed down as plain arguments:

1. the dataclass defaults below (the documented defaults of the product),
2. a YAML or JSON file (``--config FILE``), nested by section,
3. CLI flags (``--steps``, ``--seed``, ...), already translated to dotted keys,
4. ``section.key=value`` overrides, applied last.

Every step validates: an unknown section or key, or a value of the wrong type, raises
:class:`ConfigError` naming the key and listing the valid ones. The resolved config round-trips
through JSON unchanged (:meth:`Config.to_dict` / :meth:`Config.from_dict`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segcore.errors import ConfigError


def _f(default: Any, help: str) -> Any:
    """A dataclass field with a documented default."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ModelConfig:
    embed_dim: int = _f(96, "channels of the embedding the cluster head clusters")
    max_k: int = _f(16, "number of prototypes while training; the largest k selectable at inference")
    temperature: float = _f(0.8, "soft k-means temperature (cosine similarities are divided by it)")
    refine_temperature: float = _f(0.1, "temperature of the soft k-means prototype updates (sharper than the output)")
    refiner: bool = _f(False, "learned 3x3 refiner on the cluster logits (off by default)")
    smoothing: bool = _f(True, "fast smoothing lane: averages assignment maps over 3x3 neighbours")
    smooth_iters: int = _f(2, "passes of the smoothing lane")
    smooth_alpha: float = _f(0.5, "weight of the neighbour average in each smoothing pass (0..1)")


@dataclass(frozen=True)
class StudentConfig:
    embed_dim: int = _f(96, "channels out of the student encoder")
    depth: int = _f(3, "3x3 conv blocks at stride 4 after the stride-4 stem")
    width: int = _f(48, "channels of the stem (stride 2)")
    norm: str = _f("group", "normalisation in each block: group | batch")
    groups: int = _f(8, "groups for GroupNorm")
    dilations: tuple[int, ...] = _f((), "dilation of each stride-4 block (empty: all 1); e.g. 1,2,4 for more context")


@dataclass(frozen=True)
class DataConfig:
    source: str = _f("synthetic", "training data: synthetic | shards | geotiff")
    patch_sizes: tuple[int, ...] = _f((192, 256), "square patch sizes in working pixels drawn per step "
                                                   "(at 2 m: 380-510 m of ground)")
    require_slic: bool = _f(True, "every sample must carry SLIC superpixels (error otherwise)")
    cache_mode: str = _f("none", "decoded-tile cache of the shard loader: none | lru")
    cache_max_items: int = _f(256, "tiles kept by the LRU cache (per loader worker)")
    raster_paths: tuple[str, ...] = _f((), "rasters, directories or globs for source=geotiff and build-shards")
    manifest: str = _f("", "CSV with columns image[,label][,split]; overrides raster_paths")
    processed_root: str = _f("data/processed", "root under which shards are written")
    dataset: str = _f("default", "dataset name (a single path component)")
    split: str = _f("train", "split the training loader reads from the shards")
    tile_size: int = _f(512, "shard tile size in pixels")
    tile_overlap: int = _f(0, "overlap between neighbouring shard tiles in pixels")
    tiles_per_shard: int = _f(32, "tiles per shard directory")
    min_valid: float = _f(0.5, "tiles/windows with a smaller valid fraction are skipped")
    bands: tuple[int, ...] = _f((), "1-based band indexes to read as RGB (default: the first three)")
    nodata: float | None = _f(None, "nodata value to use when the raster declares none")
    percentile_low: float = _f(2.0, "low percentile for scaling 16-bit/float rasters to 0..255")
    percentile_high: float = _f(98.0, "high percentile for scaling 16-bit/float rasters to 0..255")
    slic_region_size: int = _f(24, "approximate superpixel side in pixels")
    slic_compactness: float = _f(10.0, "SLIC compactness (higher: squarer superpixels)")
    split_policy: str = _f("raster", "how splits are made: raster | block")
    val_fraction: float = _f(0.2, "share of rasters (or blocks) in the val split")
    num_workers: int = _f(0, "worker processes for shard building (0: in-process)")
    loader_workers: int = _f(0, "DataLoader worker processes while training")
    synthetic_count: int = _f(8, "scenes generated for source=synthetic")
    synthetic_size: int = _f(512, "side in pixels of each generated scene")
    split_block_tiles: int = _f(4, "block side in tiles for split_policy=block (blocks go whole to one split)")
    shard_slic: bool = _f(True, "compute SLIC superpixels while building shards (off: faster, no slic files)")
    gsd: float = _f(2.0, "working ground sample distance in metres per pixel: rasters are resampled to it on "
                         "read (never upsampled); 0: every raster at its own resolution")
    source_gsd: float = _f(0.0, "metres per pixel of rasters without a CRS (0: unknown, read at their own resolution)")
    min_side: int = _f(256, "the working resolution never shrinks a raster's shorter side below this many pixels")


@dataclass(frozen=True)
class AutoencoderConfig:
    enabled: bool = _f(True, "train the tiny reconstruction decoder (never exported)")
    lambda_recon: float = _f(0.01, "weight of the reconstruction terms")
    blur_sigma: float = _f(1.0, "Gaussian blur (px) of the reconstruction target")


@dataclass(frozen=True)
class DistillConfig:
    cluster_iters: int = _f(3, "soft k-means refinement iterations")
    ema_decay: float = _f(0.9, "EMA decay of the loss-magnitude normalisers")
    contrast_tau: float = _f(0.25, "temperature of the superpixel InfoNCE")
    contrast_neighbours: int = _f(
        0, "superpixel InfoNCE: nearest superpixels of the batch's other images sharing half of each target "
        "(0: own view only)"
    )
    prototypes_k: int = _f(32, "learnt region prototypes of the swapped-prediction term (loss.prototypes)")
    prototypes_tau: float = _f(0.1, "softmax temperature of the swapped prototype prediction")
    prototypes_queue: int = _f(2048, "regions of earlier steps in the prototype term's even spread (0: batch only)")
    descriptor_bandwidth: float = _f(1.0, "descriptor affinity target: exp(-mean sq. difference / this); 0: cosine")
    affinity_pairs: int = _f(1024, "sampled pixel pairs per image for affinity distillation")
    slic_margin: float = _f(0.5, "cosine similarity above which neighbouring superpixels are pushed apart")
    slic_colour_scale: float = _f(0.1, "mean-RGB distance (0..1 units) giving a SLIC edge strength of 0.63")
    slic_texture_scale: float = _f(0.03, "intensity-std difference giving a SLIC edge strength of 0.63")


@dataclass(frozen=True)
class LossConfig:
    consistency: float = _f(0.0, "weight: two-view symmetric KL of cluster probabilities")
    entropy: float = _f(0.0, "weight: per-pixel assignment entropy (minimised)")
    marginal: float = _f(0.0, "weight: negative entropy of the cluster marginal (clusters all used)")
    smooth: float = _f(0.0, "weight: edge-aware smoothness of the cluster probabilities")
    feature: float = _f(1.0, "weight: cosine feature distillation from the teacher")
    affinity: float = _f(1.0, "weight: pairwise affinity distillation from the teacher")
    cluster: float = _f(0.0, "weight: sharpened soft k-means assignments as targets")
    slic: float = _f(1.0, "weight: SLIC boundary prior on the embeddings")
    tv: float = _f(0.1, "weight: edge-aware total variation of the embeddings")
    contrast: float = _f(1.0, "weight: superpixel InfoNCE between the two views")
    descriptor: float = _f(3.0, "weight: superpixel similarities distilled from colour/texture descriptors")
    prototypes: float = _f(0.0, "weight: swapped prediction of learnt region prototypes shared by every image")
    edge_sigma: float = _f(0.1, "image-gradient scale (0..1 units) of the edge-aware smoothness and TV weights")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = _f(400, "optimizer steps")
    batch_size: int = _f(4, "images per step")
    lr: float = _f(2e-3, "AdamW learning rate")
    weight_decay: float = _f(1e-4, "AdamW weight decay")
    grad_clip: float = _f(1.0, "gradient norm clip (0: off)")
    warmup_steps: int = _f(20, "linear learning-rate warm-up steps")
    multi_scale_mode: str = _f("sample_one_scale_per_step", "sample_one_scale_per_step | fixed (first size)")
    seed: int = _f(0, "seed of model init, data order and patch sampling")
    device: str = _f("auto", "auto | cpu | cuda | mps (auto: cuda, then mps, then cpu)")
    amp: bool | None = _f(None, "mixed precision: None = on for CUDA (bf16), off otherwise")
    checkpoint_every: int = _f(100, "steps between checkpoints (a final one is always written)")
    log_every: int = _f(10, "steps between progress lines")
    out_dir: str = _f("runs", "directory under which run directories are created")
    nproc: int = _f(1, "processes for DistributedDataParallel (torchrun) training")
    threads: int = _f(0, "torch intra-op threads of a training process (0: auto, OMP_NUM_THREADS if set, else the "
                         "usable cores shared by the ranks; set 1 on a busy shared machine; bench/threads.py)")
    init_from: str = _f("", "checkpoint whose model weights start training (warm start; step 0, fresh optimizer)")


@dataclass(frozen=True)
class AugConfig:
    seed: int = _f(0, "seed of the augmentation generator")
    hflip: bool = _f(True, "random horizontal flips")
    vflip: bool = _f(True, "random vertical flips")
    rot90: bool = _f(True, "random 90 degree rotations")
    noise_std: float = _f(0.02, "std of additive Gaussian noise (image in 0..1)")
    contrast: float = _f(0.2, "max relative contrast change")
    saturation: float = _f(0.2, "max relative saturation change")
    brightness: float = _f(0.1, "max additive brightness change")
    hue: float = _f(0.0, "max hue rotation as a fraction of a half turn (0: off)")
    illumination: float = _f(0.25, "max relative change of a smooth multiplicative illumination field")


@dataclass(frozen=True)
class TeacherConfig:
    enabled: bool = _f(False, "distil from a frozen teacher (training only)")
    name: str = _f("dinov2_vits14", "teacher: dinov2_vits14 | dinov2_vitb14 | fake")
    weights: str = _f("", "local weights file; empty: look in the torch hub cache")
    required: bool = _f(False, "missing weights are an error instead of a FakeTeacher fallback")
    feat_dim: int = _f(384, "feature channels of the FakeTeacher fallback")


@dataclass(frozen=True)
class EvalConfig:
    k: int = _f(0, "segments per image for matched IoU (0: number of classes)")
    max_side: int = _f(512, "images are downsampled (every s-th pixel) to at most this side")
    num_overlays: int = _f(4, "overlay PNGs written (image | prediction | labels)")
    speckle_px: int = _f(16, "connected components smaller than this count as speckle")
    num_classes: int = _f(0, "classes in the labels (0: classes.csv beside the data, else the largest label)")
    synthetic_count: int = _f(4, "scenes evaluated for --synthetic (seeds scene_seed(seed, i), i < count)")
    synthetic_size: int = _f(256, "side in pixels of each evaluation scene for --synthetic")
    promote_margin: float = _f(0.05, "mIoU a challenger must gain over the champion to be promoted (seed spread)")
    label_free_images: int = _f(16, "tiles scored without labels (proxy metrics, challenger and champion)")


@dataclass(frozen=True)
class PredictConfig:
    tile: int = _f(1024, "tile side for tiled prediction")
    halo: int = _f(32, "halo in pixels read around each tile to avoid seams")
    sample_pixels: int = _f(65536, "embedding pixels sampled over the raster to fit prototypes")
    region_m: float = _f(300.0, "region vote: side in metres of the superpixels whose cells share their mean "
                                "cluster probabilities, at most a quarter of a raster's shorter side (0: off)")
    region_compactness: float = _f(0.4, "region vote: colour distance (0..1 RGB) worth one region side")
    prior_rounds: int = _f(1, "class prior: EM rounds estimating each raster's class shares from equal ones on its "
                              "sample windows; the shares then weight the probabilities (0: off, every class equally "
                              "likely; more rounds pull harder towards the raster's main classes)")
    classes: str = _f("auto", "ids: codebook (the export's dataset codebook, same ids in every raster), raster "
                              "(prototypes fitted per raster), or auto (codebook when the export has one)")
    class_names: tuple[str, ...] = _f((), "names of classes 1..k (default: the export's, else class 1..k)")
    overviews: bool = _f(False, "build internal overviews in prediction GeoTIFFs")
    vector_min_area: float = _f(0.0, "--vector: regions smaller than this (square map units) join a neighbour")
    vector_simplify: float = _f(0.0, "--vector: simplification tolerance in map units (0: off)")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict (tuples become lists), ready for JSON."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Inverse of :meth:`to_dict`; validates like any other source."""
        return _apply_nested(cls(), data, origin="dict")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def hash(self) -> str:
        """Short content hash of the resolved config (stable across processes)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def replace(self, **dotted: Any) -> Config:
        """Copy with ``{"section.key": value}`` changes, validated."""
        cfg = self
        for key, value in dotted.items():
            cfg = _set(cfg, key, value, origin="replace")
        return cfg


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def valid_keys() -> list[str]:
    """Every dotted key, in declaration order."""
    keys = []
    for name, sec in _section_types().items():
        keys += [f"{name}.{f.name}" for f in dataclasses.fields(sec)]
    return keys


def describe() -> list[tuple[str, str, str]]:
    """``(key, default as JSON, meaning)`` for every key: the README's reference table."""
    rows = []
    for name, sec in _section_types().items():
        for f in dataclasses.fields(sec):
            rows.append((f"{name}.{f.name}", json.dumps(f.default), f.metadata.get("help", "")))
    return rows


def _coerce(key: str, value: Any, hint: Any, origin: str) -> Any:
    """Check ``value`` against the field's type hint, converting only lossless cases."""
    typename = getattr(hint, "__name__", str(hint))
    origin_t = typing.get_origin(hint)
    if origin_t in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, args[0], origin)
    if origin_t is tuple:
        item_t = typing.get_args(hint)[0]
        if isinstance(value, str):
            parts = [s.strip() for s in value.split(",") if s.strip()]
            value = parts if item_t is str else [_parse_scalar(s) for s in parts]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of {item_t.__name__}, got {value!r} (from {origin})")
        return tuple(_coerce(key, v, item_t, origin) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}: expected bool (true/false), got {value!r} (from {origin})")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected int, got {value!r} (from {origin})")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected float, got {value!r} (from {origin})")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected str, got {value!r} (from {origin})")
    raise ConfigError(f"{key}: unsupported type {typename}")  # pragma: no cover - a bug in this file


def _set(cfg: Config, dotted: str, value: Any, origin: str) -> Config:
    sections = _section_types()
    if dotted.count(".") != 1:
        raise ConfigError(f"config key {dotted!r} must look like section.key; valid keys: {', '.join(valid_keys())}")
    sec_name, key = dotted.split(".")
    if sec_name not in sections:
        raise ConfigError(f"unknown config section {sec_name!r} (from {origin}); valid sections: {', '.join(sections)}")
    sec_cls = sections[sec_name]
    hints = typing.get_type_hints(sec_cls)
    if key not in hints:
        valid = ", ".join(f"{sec_name}.{k}" for k in hints)
        raise ConfigError(f"unknown config key {dotted!r} (from {origin}); valid keys in [{sec_name}]: {valid}")
    coerced = _coerce(dotted, value, hints[key], origin)
    section = dataclasses.replace(getattr(cfg, sec_name), **{key: coerced})
    return _validate(dataclasses.replace(cfg, **{sec_name: section}))


def _apply_nested(cfg: Config, data: dict[str, Any], origin: str) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"config from {origin} must be a mapping of sections, got {type(data).__name__}")
    for sec_name, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"config section {sec_name!r} from {origin} must be a mapping of keys")
        for key, value in values.items():
            cfg = _set(cfg, f"{sec_name}.{key}", value, origin)
    return cfg


_CHOICES = {
    "data.source": ("synthetic", "shards", "geotiff"),
    "data.cache_mode": ("none", "lru"),
    "data.split_policy": ("raster", "block"),
    "student.norm": ("group", "batch"),
    "train.multi_scale_mode": ("sample_one_scale_per_step", "fixed"),
    "train.device": ("auto", "cpu", "cuda", "mps"),
    "predict.classes": ("auto", "codebook", "raster"),
}


# Smallest (and largest) valid values of integer keys; seeds are what numpy and torch both accept.
_RANGES: dict[str, tuple[int, int | None]] = {
    "train.seed": (0, 2**32 - 1), "aug.seed": (0, 2**32 - 1), "data.tile_size": (16, None),
    "data.tiles_per_shard": (1, None), "data.num_workers": (0, None), "data.loader_workers": (0, None),
    "data.synthetic_count": (1, None), "data.synthetic_size": (16, None), "predict.tile": (16, None),
    "predict.halo": (0, None), "predict.sample_pixels": (1, None), "predict.prior_rounds": (0, None),
}  # fmt: skip


def _validate(cfg: Config) -> Config:
    """Cross-field checks that a type alone cannot express."""
    for dotted, (low, high) in _RANGES.items():
        sec, key = dotted.split(".")
        value = getattr(getattr(cfg, sec), key)
        if value < low or (high is not None and value > high):
            raise ConfigError(f"{dotted}={value} is out of range: expected {low}..{high if high is not None else ''}")
    for dotted, choices in _CHOICES.items():
        sec, key = dotted.split(".")
        value = getattr(getattr(cfg, sec), key)
        if value not in choices and not (dotted == "train.device" and value.startswith("cuda:")):
            raise ConfigError(f"{dotted}={value!r} is not one of {', '.join(choices)}")
    if not cfg.data.patch_sizes or any(s < 16 for s in cfg.data.patch_sizes):
        raise ConfigError(f"data.patch_sizes={cfg.data.patch_sizes} must be non-empty sizes of at least 16 px")
    if cfg.student.dilations and (len(cfg.student.dilations) != cfg.student.depth or min(cfg.student.dilations) < 1):
        raise ConfigError(f"student.dilations={list(cfg.student.dilations)} must be empty or give one dilation >= 1 "
                          f"per block (student.depth={cfg.student.depth})")
    if cfg.data.gsd < 0 or cfg.data.source_gsd < 0:
        raise ConfigError(f"data.gsd={cfg.data.gsd} and data.source_gsd={cfg.data.source_gsd} must be >= 0 (metres)")
    if cfg.data.min_side < 16:
        raise ConfigError(f"data.min_side={cfg.data.min_side} must be at least 16 pixels")
    if not 0.0 <= cfg.data.min_valid <= 1.0:
        raise ConfigError(f"data.min_valid={cfg.data.min_valid} must be within 0..1")
    if cfg.model.max_k < 2:
        raise ConfigError(f"model.max_k={cfg.model.max_k} must be at least 2")
    if cfg.model.temperature <= 0:
        raise ConfigError(f"model.temperature={cfg.model.temperature} must be positive")
    if cfg.train.steps < 0 or cfg.train.batch_size < 1:
        raise ConfigError("train.steps must be >= 0 and train.batch_size >= 1")
    if cfg.data.tile_overlap < 0 or cfg.data.tile_overlap >= cfg.data.tile_size:
        raise ConfigError(f"data.tile_overlap={cfg.data.tile_overlap} must be in 0..tile_size-1")
    if any(b < 1 for b in cfg.data.bands):
        raise ConfigError(f"data.bands={cfg.data.bands} are 1-based band indexes")
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.steps=5"`` -> ``("train.steps", 5)``; values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    return key.strip(), _parse_scalar(raw.strip())


def _parse_scalar(raw: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        return raw
    if value is None and raw.lower() not in ("null", "none", "~"):
        return raw
    if isinstance(value, str) and raw.lower() == "none":
        return None
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a nested YAML/JSON config file into a dict (no validation yet)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid JSON: {exc}") from exc
    else:
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return data


def load_config(
    path: str | Path | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: Config | None = None,
) -> Config:
    """Defaults (or ``base``), then ``path`` (YAML/JSON), then ``flags`` (dotted keys), then ``overrides``.

    Raises :class:`ConfigError` on an unknown key or a value of the wrong type.
    """
    cfg = base if base is not None else Config()
    if path:
        cfg = _apply_nested(cfg, read_config_file(path), origin=str(path))
    for key, value in (flags or {}).items():
        cfg = _set(cfg, key, value, origin="command-line flag")
    for text in overrides:
        key, value = parse_override(text)
        cfg = _set(cfg, key, value, origin=f"override {text!r}")
    return cfg
