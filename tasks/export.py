"""Stage 4: export the inference weights for the numpy runtime and register a model version."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from prefect import task

from segcore.config import Config
from tasks import tracking
from tasks.registry import register


@task(name="export")
def export(config: dict[str, Any], parent_run_id: str, checkpoint_uri: str, metrics_uri: str,
           model_name: str) -> dict[str, Any]:
    """Export ``checkpoint_uri`` (with the evaluation metrics of ``metrics_uri``); log it and register it."""
    from segcore.export import export_checkpoint

    cfg = Config.from_dict(config)
    train_run = tracking.run_of(checkpoint_uri)
    local_dir = Path(cfg.train.out_dir).parent / "exports" / train_run
    tags = {"segcore.input_run_id": train_run, "segcore.eval_run_id": tracking.run_of(metrics_uri),
            "segcore.checkpoint_uri": checkpoint_uri}
    with tracking.stage_run(parent_run_id, "export", tags) as run_id:
        with tempfile.TemporaryDirectory(prefix="segcore-export-") as tmp:
            checkpoint = tracking.fetch(checkpoint_uri, Path(tmp) / "ckpt")
            eval_metrics = json.loads(tracking.fetch(metrics_uri, Path(tmp) / "eval").read_text())
            export_checkpoint(checkpoint, local_dir, run_id=train_run, eval_metrics=eval_metrics)
        tracking.client().log_artifacts(run_id, str(local_dir), "export")
        export_uri = tracking.artifact_uri(run_id, "export")
        version = register(model_name, export_uri, run_id, eval_metrics, checkpoint_uri)
        tracking.set_tags(run_id, {"segcore.model_version": version})
    return {"run_id": run_id, "version": version, "local_dir": str(local_dir.resolve()), "export_uri": export_uri}
