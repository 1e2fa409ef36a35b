"""Stage 3: score the new checkpoint and the current champion on the same evaluation set."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from prefect import task

from segcore.config import Config
from tasks import tracking


@task(name="evaluate")
def evaluate(config: dict[str, Any], parent_run_id: str, checkpoint_uri: str, manifest_uri: str,
             champion_export_uri: str = "") -> dict[str, Any]:
    """Evaluate ``checkpoint_uri`` and (when given) the champion export on the same tiles of the
    shards of ``manifest_uri``; log both, the report files and overlays.

    Returns the metrics (the champion's under ``champion/``), the evaluation set, whether it is
    labelled, ``metrics_uri`` (the challenger's ``metrics.json``) and ``champion_error`` when the
    champion's export could not be scored.
    """
    from segcore.lineage import shard_root
    from segcore.promotion import score_on_shards

    cfg = Config.from_dict(config)
    tags = {"segcore.input_run_id": tracking.run_of(checkpoint_uri), "segcore.checkpoint_uri": checkpoint_uri,
            "segcore.champion_export_uri": champion_export_uri}
    with tracking.stage_run(parent_run_id, "evaluate", tags) as run_id, \
            tempfile.TemporaryDirectory(prefix="segcore-eval-") as tmp:
        root = shard_root(cfg, tracking.fetch(manifest_uri, Path(tmp) / "manifest"))
        checkpoint = tracking.fetch(checkpoint_uri, Path(tmp) / "ckpt")
        champion = tracking.fetch(champion_export_uri, Path(tmp) / "champion") if champion_export_uri else None
        scored = score_on_shards(root, checkpoint, champion, cfg, Path(tmp) / "out")
        plan, metrics, champion_error = scored.plan, scored.metrics, scored.champion_error
        tracking.set_tags(run_id, {"segcore.eval_split": plan.split, "segcore.eval_set": plan.describe(),
                                   "segcore.labelled": plan.labelled, "segcore.champion_error": champion_error})
        tracking.log_metrics(run_id, metrics)
        c = tracking.client()
        for part in ("eval", "champion", "baseline", "constant"):
            if (Path(tmp) / "out" / part).is_dir():
                c.log_artifacts(run_id, str(Path(tmp) / "out" / part), part)
        c.log_text(run_id, json.dumps({"split": plan.split, "labelled": plan.labelled,
                                       "champion_error": champion_error}, indent=2), "eval/eval-set.json")
    return {"run_id": run_id, "metrics": metrics, "eval_set": plan.describe(), "labelled": plan.labelled,
            "metrics_uri": tracking.artifact_uri(run_id, "eval/metrics.json"), "champion_error": champion_error,
            "note": _note(metrics, plan.describe())}


def _note(metrics: dict[str, float], eval_set: str) -> str:
    if "val/miou" in metrics and metrics["val/miou"] == metrics["val/miou"]:
        mine = f"mIoU {metrics['val/miou']:.3f}"
        if "val/dataset/miou" in metrics:
            mine += f" (one legend for the set: {metrics['val/dataset/miou']:.3f})"
        if "champion/val/miou" in metrics:
            mine += f" vs champion {metrics['champion/val/miou']:.3f}"
        if "baseline/kmeans_rgb/miou" in metrics:
            mine += f" ({metrics['val/miou'] - metrics['baseline/kmeans_rgb/miou']:+.3f} vs RGB k-means"
            if "baseline/constant/miou" in metrics:
                mine += f", {metrics['val/miou'] - metrics['baseline/constant/miou']:+.3f} vs one label per image"
            mine += ")"
        return f"{eval_set}: {mine}"
    return f"{eval_set}: no labels, proxy metrics only"
