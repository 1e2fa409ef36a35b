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
def export(config: dict[str, Any], parent_run_id: str, train_run_id: str, eval_run_id: str,
           model_name: str) -> dict[str, Any]:
    """Export the train run's checkpoint (with the eval run's metrics); log it and register it."""
    from segcore.export import export_checkpoint

    cfg = Config.from_dict(config)
    local_dir = Path(cfg.train.out_dir).parent / "exports" / train_run_id
    with tracking.stage_run(parent_run_id, "export", {"segcore.input_run_id": train_run_id,
                                                      "segcore.eval_run_id": eval_run_id}) as run_id:
        with tempfile.TemporaryDirectory(prefix="segcore-export-") as tmp:
            checkpoint = tracking.download(train_run_id, "checkpoints/last.pt", Path(tmp) / "ckpt")
            metrics_file = tracking.download(eval_run_id, "eval/metrics.json", Path(tmp) / "eval")
            eval_metrics = json.loads(metrics_file.read_text())
            export_checkpoint(checkpoint, local_dir, run_id=train_run_id, eval_metrics=eval_metrics)
        tracking.client().log_artifacts(run_id, str(local_dir), "export")
        version = register(model_name, tracking.artifact_uri(run_id, "export"), run_id, eval_metrics)
        tracking.set_tags(run_id, {"segcore.model_version": version})
    return {"run_id": run_id, "version": version, "local_dir": str(local_dir.resolve()),
            "export_uri": tracking.artifact_uri(run_id, "export")}
