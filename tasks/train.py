"""Stage 2: train the student on the shards recorded by a build_shards run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from segcore.config import Config
from tasks import tracking


def shards_of(build_run_id: str) -> Path:
    """The shard dataset a build run recorded, checked against the manifest it logged."""
    from segcore.errors import ShardError

    run = tracking.client().get_run(build_run_id)
    root = Path(run.data.tags["segcore.shards.root"])
    logged = tracking.download(build_run_id, "shards/manifest.json").read_bytes()
    if not (root / "manifest.json").is_file() or (root / "manifest.json").read_bytes() != logged:
        raise ShardError(f"{root}: the shards of build run {build_run_id} are gone or were rebuilt since; "
                         "re-run the build_shards stage")
    return root


@task(name="train")
def train(config: dict[str, Any], parent_run_id: str, build_run_id: str) -> dict[str, Any]:
    """Train on the build run's shards; log config, per-step metrics and the checkpoint."""
    from segcore.train import fit

    root = shards_of(build_run_id)
    cfg = Config.from_dict(config).replace(**{
        "data.source": "shards", "data.processed_root": str(root.parent), "data.dataset": root.name})
    with tracking.stage_run(parent_run_id, "train", {"segcore.input_run_id": build_run_id}) as run_id:
        run_dir = Path(cfg.train.out_dir) / run_id
        result = fit(cfg, run_dir, logger=tracking.MlflowTrainLogger(run_id))
        tracking.log_metrics(run_id, {"best_loss": result.best_loss, "best_step": result.best_step,
                                      "images_per_s": result.images_per_s}, step=result.step)
        c = tracking.client()
        for name in ("config.json", "versions.json", "metrics.jsonl"):
            c.log_artifact(run_id, str(run_dir / name))
        c.log_artifact(run_id, str(result.checkpoint), "checkpoints")
    return {"run_id": run_id, "checkpoint_uri": tracking.artifact_uri(run_id, "checkpoints/last.pt"),
            "best_loss": result.best_loss, "steps": result.step}
