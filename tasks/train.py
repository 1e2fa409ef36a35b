"""Stage 2: train the student on the shards a build run's manifest describes.

In this process, or with ``train.nproc > 1`` on ``torchrun`` processes (rank 0 logs into the
same MLflow run through ``tasks.tracking:MlflowTrainLogger``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prefect import task

from segcore.config import Config
from tasks import tracking

LOGGER_SPEC = "tasks.tracking:MlflowTrainLogger"


@task(name="train")
def train(config: dict[str, Any], parent_run_id: str, manifest_uri: str, warm_start_uri: str = "") -> dict[str, Any]:
    """Train on the shards of ``manifest_uri``; log config, per-step metrics, the dataset input and
    the checkpoint. ``warm_start_uri``: a checkpoint whose weights start training (lineage tag)."""
    from segcore.launch import run_training
    from segcore.lineage import dataset_record, shard_root
    from tasks.lifecycle import resumable_checkpoint

    tags = {"segcore.input_run_id": tracking.run_of(manifest_uri), "segcore.manifest_uri": manifest_uri,
            "segcore.warm_start_uri": warm_start_uri}
    with tracking.stage_run(parent_run_id, "train", tags) as run_id, \
            tempfile.TemporaryDirectory(prefix="segcore-train-") as tmp:
        cfg = Config.from_dict(config)
        root = shard_root(cfg, tracking.fetch(manifest_uri, Path(tmp) / "manifest"))
        updates = {"data.source": "shards", "data.processed_root": str(root.parent), "data.dataset": root.name}
        if warm_start_uri:
            updates["train.init_from"] = str(tracking.fetch(warm_start_uri, Path(cfg.train.out_dir) / run_id / "init"))
        cfg = cfg.replace(**updates)
        record = dataset_record(root)
        tracking.log_dataset_input(run_id, record)
        tracking.set_tags(run_id, record.as_tags())
        run_dir = Path(cfg.train.out_dir) / run_id
        # A killed run with this config and data continues from its last checkpoint (tasks.lifecycle).
        experiment = tracking.client().get_run(run_id).info.experiment_id
        resumed = resumable_checkpoint(experiment, cfg.to_dict(), record.digest)
        if resumed is not None:
            tracking.set_tags(run_id, {"segcore.resumed_from": resumed[0], "segcore.resumed_step": resumed[2]})
        result = run_training(cfg, run_dir, logger=tracking.MlflowTrainLogger(run_id), logger_spec=LOGGER_SPEC,
                              logger_arg=run_id, resume=resumed[1] if resumed is not None else None)
        tracking.log_metrics(run_id, {"best_loss": result.best_loss, "best_step": result.best_step,
                                      "images_per_s": result.images_per_s, "train/nproc": cfg.train.nproc},
                             step=result.step)
        c = tracking.client()
        for name in ("config.json", "versions.json", "metrics.jsonl"):
            c.log_artifact(run_id, str(run_dir / name))
        c.log_artifact(run_id, str(result.checkpoint), "checkpoints")
    return {"run_id": run_id, "checkpoint_uri": tracking.artifact_uri(run_id, "checkpoints/last.pt"),
            "best_loss": result.best_loss, "steps": result.step, "dataset": record.name,
            "dataset_digest": record.digest}
