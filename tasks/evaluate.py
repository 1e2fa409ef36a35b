"""Stage 3: score the trained checkpoint on the held-out shards (and the RGB k-means baseline)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from prefect import task

from segcore.config import Config
from tasks import tracking
from tasks.train import shards_of


def eval_split(root: Path) -> str:
    """``val`` when the build made one with labelled tiles, else ``train`` (proxy metrics only)."""
    manifest = json.loads((root / "manifest.json").read_text())
    splits = manifest.get("splits", {})
    return "val" if (root / "val").is_dir() and splits.get("val", 1) else "train"


def num_classes(cfg: Config) -> int:
    """``eval.num_classes``, else the ids of ``classes.csv`` beside the data manifest, else 0."""
    import pandas as pd

    if cfg.eval.num_classes:
        return cfg.eval.num_classes
    classes = Path(cfg.data.manifest).parent / "classes.csv" if cfg.data.manifest else None
    if classes is not None and classes.is_file():
        return int(pd.read_csv(classes)["id"].max())
    return 0


@task(name="evaluate")
def evaluate(config: dict[str, Any], parent_run_id: str, train_run_id: str, build_run_id: str) -> dict[str, Any]:
    """Evaluate the train run's checkpoint on the build run's shards; log metrics, table and overlays."""
    from segcore.evaluate import evaluate as run_eval
    from segcore.evaluate import shard_data

    cfg = Config.from_dict(config)
    root = shards_of(build_run_id)
    split = eval_split(root)
    classes = num_classes(cfg) or cfg.model.max_k
    with tracking.stage_run(
        parent_run_id, "evaluate", {"segcore.input_run_id": train_run_id, "segcore.eval_split": split}
    ) as run_id, tempfile.TemporaryDirectory(prefix="segcore-eval-") as tmp:
        checkpoint = tracking.download(train_run_id, "checkpoints/last.pt", Path(tmp) / "ckpt")
        data = shard_data(root, split, cfg, classes)
        metrics = run_eval(checkpoint, data, cfg, Path(tmp) / "eval")
        baseline = run_eval("kmeans", data, cfg.replace(**{"eval.num_overlays": 0}), Path(tmp) / "baseline")
        metrics.update(
            {
                f"baseline/kmeans_rgb/{k.split('/', 1)[1]}": v
                for k, v in baseline.items()
                if k in ("val/miou", "val/pixel_acc")
            }
        )
        tracking.log_metrics(run_id, metrics)
        tracking.client().log_artifacts(run_id, str(Path(tmp) / "eval"), "eval")
        tracking.client().log_text(
            run_id, (Path(tmp) / "baseline" / "summary.md").read_text(), "baseline/summary.md"
        )
    if "val/miou" in metrics:
        gain = metrics["val/miou"] - metrics["baseline/kmeans_rgb/miou"]
        note = f"{split}: mIoU {metrics['val/miou']:.3f} ({gain:+.3f} vs RGB k-means)"
    else:
        note = f"{split}: no labels, proxy metrics only"
    return {"run_id": run_id, "metrics": metrics, "note": note}
