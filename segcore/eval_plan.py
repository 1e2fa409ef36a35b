"""Which shards a pipeline run scores its models on, and whether labels decide.

Evaluation set, in order of preference (``docs/data.md`` describes the splits):

1. ``check``: rows a manifest marks ``split=check`` are tiled into their own split, which the
   training loader never reads (it reads ``data.split``, ``train``). Labelled: a held-out check set.
2. ``val``: the labelled validation split the build made.
3. otherwise the data has no labels: the first ``eval.label_free_images`` tiles of the first split
   present are scored with label-free proxies only (cheap next to training), and nothing is held
   out of training for them (:func:`training_holdout`).
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from segcore.config import Config
from segcore.data.raster import discover_sources
from segcore.evaluate import EvalData, classes_csv_count, shard_data

log = logging.getLogger(__name__)

PREFERRED = ("check", "val")


@dataclass(frozen=True)
class EvalPlan:
    """``split`` of the shards to score; ``labelled``: whether matched mIoU is defined on it."""

    split: str
    labelled: bool
    num_classes: int
    max_images: int  # 0: every tile of the split

    def describe(self) -> str:
        kind = "labelled" if self.labelled else "unlabelled, label-free proxies"
        cap = f", first {self.max_images} tiles" if self.max_images else ""
        return f"{self.split} ({kind}{cap})"


def class_count(cfg: Config) -> int:
    """``eval.num_classes``, else the ids of ``classes.csv`` beside the data manifest, else 0."""
    if cfg.eval.num_classes:
        return cfg.eval.num_classes
    return classes_csv_count(Path(cfg.data.manifest).parent) if cfg.data.manifest else 0


def plan_evaluation(root: str | Path, cfg: Config) -> EvalPlan:
    """The evaluation split of the shard dataset at ``root`` (see the module docstring)."""
    manifest = json.loads((Path(root) / "manifest.json").read_text())
    present = [s for s, entry in manifest.get("splits", {}).items() if entry.get("tiles", 0) > 0]
    labelled = {split for src in manifest.get("sources", []) if src.get("label") for split in src.get("splits", [])}
    for split in PREFERRED:
        if split in present and split in labelled:
            classes = class_count(cfg) or cfg.model.max_k
            return EvalPlan(split, True, classes, 0)
    split = next((s for s in (*PREFERRED, "train") if s in present), sorted(present)[0])
    return EvalPlan(split, False, cfg.model.max_k, cfg.eval.label_free_images)


def eval_data(root: str | Path, plan: EvalPlan, cfg: Config) -> EvalData:
    """The tiles of ``plan.split`` as :class:`EvalData`, capped at ``plan.max_images``."""
    data = shard_data(root, plan.split, cfg, plan.num_classes)
    if not plan.max_images:
        return data

    def images():
        return itertools.islice(data.images(), plan.max_images)

    return EvalData(data.name, data.num_classes, images)


def training_holdout(cfg: Config) -> Config:
    """``cfg`` with ``data.val_fraction = 0`` when no input has a label: without labels a held-out
    split could only feed proxy metrics, so every raster trains."""
    if cfg.data.val_fraction == 0 or any(src.label for src in discover_sources(cfg.data)):
        return cfg
    log.info("no labels among the inputs: no raster is held out of training (data.val_fraction=0)")
    return cfg.replace(**{"data.val_fraction": 0.0})
