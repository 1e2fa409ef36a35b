"""The segcore pipeline: build shards -> train -> evaluate -> export (+ champion promotion).

``python flows/full_pipeline.py`` runs it on the embedded default: a few synthetic georeferenced
scenes generated into ``--work-dir``, with Prefect's temporary local server and MLflow's default
store (``sqlite:///mlflow.db``), unless ``PREFECT_API_URL`` / ``MLFLOW_TRACKING_URI`` point at
servers. ``--data DIR|GLOB|MANIFEST.csv`` trains on your own GeoTIFFs instead. ``--help`` lists
every parameter. The same flow serves the deployments in ``prefect.yaml`` (ad hoc and nightly).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.build_shards_flow import build_shards_fanout
from segcore.config import load_config
from tasks.build_shards import build_shards
from tasks.evaluate import evaluate
from tasks.export import export
from tasks.pipeline import finish_pipeline_run, prepare_default_data, publish_summary, start_pipeline_run
from tasks.registry import promote
from tasks.train import train


class PipelineParams(BaseModel):
    """Parameters of one pipeline run (shown in the Prefect UI)."""

    data: str = Field("", description="GeoTIFF directory, glob or manifest CSV (image[,label][,split]); "
                                      "empty: the embedded synthetic default")
    dataset: str = Field("synthetic-default", description="name of the shard dataset")
    work_dir: str = Field("segcore-work", description="directory for data, shards, runs and exports")
    experiment: str = Field("segcore", description="MLflow experiment")
    model_name: str = Field("segcore-student", description="MLflow registered model name")
    steps: int = Field(400, ge=0, description="training steps")
    batch_size: int = Field(4, ge=1, description="images per training step")
    patch_sizes: list[int] = Field([128], description="patch sizes drawn per step")
    seed: int = Field(0, description="seed of training and of the generated default data")
    synthetic_count: int = Field(8, ge=2, description="scenes in the embedded default dataset")
    synthetic_size: int = Field(384, ge=64, description="side in pixels of each default scene")
    promote_metric: str = Field("val/miou", description="metric that decides the champion alias (higher wins)")
    task_runner: Literal["serial", "thread", "dask"] = Field(
        "serial", description="shard building: in the task (serial), or one task per shard on threads or Dask")
    dask_address: str = Field("", description="existing Dask scheduler address for task_runner=dask")
    dask_workers: int = Field(2, ge=1, description="local Dask worker processes when no address is given")
    config_file: str = Field("", description="YAML/JSON config file applied before the overrides")
    overrides: list[str] = Field([], description="segcore config overrides, section.key=value")


def resolve_config(p: PipelineParams, manifest: str) -> dict[str, Any]:
    """The segcore config of this run: file, then the parameters, then the overrides."""
    work = Path(p.work_dir).resolve()
    flags = {
        "data.manifest": manifest if manifest.endswith(".csv") else "",
        "data.raster_paths": [] if manifest.endswith(".csv") else [manifest],
        "data.processed_root": str(work / "processed"),
        "data.dataset": p.dataset,
        "data.patch_sizes": p.patch_sizes,
        "train.steps": p.steps,
        **({"data.tile_size": p.synthetic_size} if not p.data else {}),  # one tile per default scene
        "train.batch_size": p.batch_size,
        "train.seed": p.seed,
        "aug.seed": p.seed,
        "train.out_dir": str(work / "runs"),
        "train.checkpoint_every": max(p.steps // 2, 1),
    }
    return load_config(p.config_file or None, flags=flags, overrides=p.overrides).to_dict()


@flow(name="segcore-full-pipeline", log_prints=True)
def full_pipeline(params: PipelineParams | None = None) -> dict[str, Any]:
    """Build shards -> train -> evaluate -> export, each stage a child MLflow run of one parent."""
    p = params or PipelineParams()
    log = get_run_logger()
    work = Path(p.work_dir).resolve()
    # Phase 0: data (the embedded default unless --data is given) and the resolved config.
    data = p.data or prepare_default_data(str(work / "default-data"), p.synthetic_count, p.synthetic_size, p.seed)
    config = resolve_config(p, data)
    parent = start_pipeline_run(p.experiment, str(work / "mlartifacts"), p.model_dump(), config, flow_run.id)
    stages: dict[str, dict[str, Any]] = {}
    try:
        # Phase 1: shards (content-cached), then training on them.
        prebuilt = ""
        if p.task_runner != "serial":  # one task per shard on threads or Dask, then recorded like a serial build
            prebuilt = build_shards_fanout(config, p.task_runner, p.dask_address, p.dask_workers)
        shards = build_shards(config, parent, prebuilt_root=prebuilt)
        stages["build_shards"] = {**shards, "note": "reused cached shards" if shards["cached"] else "built"}
        trained = train(config, parent, shards["run_id"])
        stages["train"] = {**trained, "note": f"{trained['steps']} steps, best loss {trained['best_loss']:.4f}"}
        # Phase 2: evaluation on the held-out split, export of the inference weights.
        evaluated = evaluate(config, parent, trained["run_id"], shards["run_id"])
        stages["evaluate"] = {**evaluated, "note": evaluated["note"]}
        exported = export(config, parent, trained["run_id"], evaluated["run_id"], p.model_name)
        stages["export"] = {**exported, "note": f"version {exported['version']}"}
        # Phase 3: the champion alias moves only on improvement.
        decision = promote(p.model_name, exported["version"], p.promote_metric,
                           evaluated["metrics"].get(p.promote_metric, float("nan")))
    except Exception as exc:
        finish_pipeline_run(parent, "FAILED", f"{type(exc).__name__}: {exc}")
        raise
    finish_pipeline_run(parent, "FINISHED")
    summary = {
        "parent_run_id": parent, "experiment": p.experiment, "stages": stages,
        "metrics": evaluated["metrics"], "export_dir": exported["local_dir"], "model_name": p.model_name,
        "model_version": exported["version"], "champion_note": decision["reason"],
    }
    publish_summary(summary)
    log.info("pipeline finished: parent MLflow run %s", parent)
    return summary


def _parser() -> argparse.ArgumentParser:
    """Command-line flags generated from :class:`PipelineParams`, so the two never drift apart."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for name, field in PipelineParams.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if name == "overrides":
            parser.add_argument(name, nargs="*", default=[], metavar="section.key=value", help=field.description)
        elif name == "patch_sizes":
            parser.add_argument(flag, type=lambda s: [int(x) for x in s.split(",")], default=field.default,
                                help=field.description + " (comma separated)")
        elif name == "task_runner":
            parser.add_argument(flag, choices=("serial", "thread", "dask"), default=field.default,
                                help=field.description)
        else:
            parser.add_argument(flag, type=type(field.default), default=field.default, help=field.description)
    return parser


def print_summary(summary: dict[str, Any]) -> None:
    from tasks.tracking import tracking_summary

    t = tracking_summary()
    stages = summary["stages"]
    print("\n=== segcore pipeline summary ===")
    print(f"MLflow experiment : {summary['experiment']}  (tracking URI {t['tracking_uri']})")
    print(f"parent run        : {summary['parent_run_id']}")
    for name in ("build_shards", "train", "evaluate", "export"):
        print(f"  {name:<13}: run {stages[name]['run_id']}  {stages[name].get('note', '')}")
    print(f"export            : {summary['export_dir']}  (model.npz, meta.json, metrics.json)")
    print(f"registry          : {summary['model_name']} v{summary['model_version']}: {summary['champion_note']}")
    print("metrics           :")
    for key, value in sorted(summary["metrics"].items()):
        if key.startswith(("val/miou", "val/pixel_acc", "val/majority/miou", "proxy/", "baseline/")):
            print(f"  {key:<28} {value:.4f}")
    print(f"MLflow UI         : {t['ui']}")
    print("Prefect UI        : prefect server start --host 127.0.0.1  (then open http://127.0.0.1:4200)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    params = PipelineParams(**vars(args))
    summary = full_pipeline(params)
    print_summary(summary)
    Path(params.work_dir, "last-summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
