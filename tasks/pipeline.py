"""Pipeline-level tasks: the parent MLflow run, the embedded default data, the run summary."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

import segcore
from tasks import tracking
from tasks.retry import retry_on_io


def run_name(dataset: str, when: datetime | None = None) -> str:
    """``<dataset> <UTC date and time>``: what the parent run is called in the MLflow UI."""
    when = when or datetime.now(timezone.utc)
    return f"{dataset} {when.strftime('%Y-%m-%d %H:%M:%S')}Z"


@task(name="start_pipeline_run")
def start_pipeline_run(experiment: str, artifact_root: str, params: dict[str, Any], config: dict[str, Any],
                       flow_run_id: str | None) -> str:
    """Open the parent run (named after the dataset and the time): git commit, segcore version, the
    full parameters and resolved config."""
    exp_id = tracking.experiment_id(experiment, artifact_root)
    name = run_name(config["data"]["dataset"])
    run = tracking.client().create_run(exp_id, run_name=name, tags={
        "segcore.stage": "pipeline", "segcore.version": segcore.__version__, "git.commit": tracking.git_commit(),
        "prefect.flow_run_id": flow_run_id or "",
    })
    run_id = run.info.run_id
    tracking.log_params(run_id, {f"param.{k}": v for k, v in params.items()})
    tracking.client().log_dict(run_id, config, "config.json")
    tracking.client().log_dict(run_id, params, "params.json")
    return run_id


@task(name="finish_pipeline_run")
def finish_pipeline_run(run_id: str, status: str, error: str = "") -> None:
    if error:
        tracking.set_tags(run_id, {"segcore.error": error[:5000]})
    tracking.client().set_terminated(run_id, status)


@task(name="pipeline_config")
def pipeline_config(config_file: str, flags: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """segcore's config for this run (defaults, file, flags, overrides), with the hold-out policy for
    its inputs applied when they are named (no labels: nothing held out of training)."""
    from segcore.config import load_config
    from segcore.eval_plan import training_holdout

    cfg = load_config(config_file or None, flags=flags, overrides=overrides)
    named = cfg.data.manifest or cfg.data.raster_paths
    return (training_holdout(cfg) if named else cfg).to_dict()


@task(name="prepare_default_data", retries=2, retry_delay_seconds=1, retry_condition_fn=retry_on_io)
def prepare_default_data(out_dir: str, count: int, size: int, seed: int) -> str:
    """Write the embedded default dataset (synthetic georeferenced scenes with labels) once per
    ``(count, size, seed)``, into ``<out_dir>/n<count>-s<size>-seed<seed>/``; its manifest path.

    Every value that shapes the scenes is in the directory name, so other values never reuse these
    scenes (the shard cache then keys on their content), and the manifest path in the logged config
    says which scenes a run used. The directory appears whole or not at all.
    """
    from segcore.data.synthetic import write_synthetic_dataset
    from segcore.safety import replacing_dir

    target = Path(out_dir) / f"n{count}-s{size}-seed{seed}"
    manifest = target / "manifest.csv"
    if not manifest.is_file():
        with replacing_dir(target, "synth", what="default data directory") as tmp:
            write_synthetic_dataset(tmp, count=count, size=size, seed=seed)
    return str(manifest)


def run_link(run_id: str) -> str:
    """A link to a run in the MLflow UI when the tracking server is HTTP; the run id otherwise."""
    uri = tracking.client().tracking_uri
    if uri.startswith(("http://", "https://")):
        exp = tracking.client().get_run(run_id).info.experiment_id
        return f"[{run_id[:8]}]({uri.rstrip('/')}/#/experiments/{exp}/runs/{run_id})"
    return f"`{run_id}`"


@task(name="publish_summary")
def publish_summary(summary: dict[str, Any]) -> str:
    """A Prefect markdown artifact: stages with their MLflow runs, the headline metrics, the export."""
    lines = ["# segcore pipeline", "", "| stage | MLflow run | note |", "|---|---|---|"]
    for stage in ("build_shards", "train", "evaluate", "export"):
        info = summary["stages"].get(stage, {})
        lines.append(f"| {stage} | {run_link(info['run_id']) if 'run_id' in info else '-'} | {info.get('note', '')} |")
    lines += ["", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in sorted(summary["metrics"].items())]
    lines += ["", f"Evaluation set: {summary.get('eval_set', '')}.", "",
              f"Parent run: {run_link(summary['parent_run_id'])}; export: `{summary['export_dir']}`;",
              f"registered as `{summary['model_name']}` version {summary['model_version']}: "
              f"{summary['champion_note']}"]
    text = "\n".join(lines)
    create_markdown_artifact(text, key="segcore-pipeline-summary", description="segcore pipeline run")
    return text
