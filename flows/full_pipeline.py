"""The segcore pipeline: build shards -> train -> evaluate (challenger and champion) -> export -> decide.

``python flows/full_pipeline.py`` runs it on the embedded default: a few synthetic georeferenced
scenes generated into ``--work-dir``, with Prefect's temporary local server and MLflow's default
store (``sqlite:///mlflow.db``), unless ``PREFECT_API_URL`` / ``MLFLOW_TRACKING_URI`` point at
servers. ``--data DIR|GLOB|MANIFEST.csv`` trains on your own GeoTIFFs instead. ``--help`` lists
every parameter. The same flow serves the deployments in ``prefect.yaml`` (ad hoc and nightly).

Settings come from one place, segcore's config: its defaults, then ``--config-file`` (by default
``configs/pipeline.yaml``), then the parameters given here, then ``section.key=value`` overrides.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from flows.build_shards_flow import build_shards_fanout
from tasks.build_shards import build_shards
from tasks.evaluate import evaluate
from tasks.export import export
from tasks.lifecycle import mark_stale_runs, patient_temporary_server, signals_raise, status_for
from tasks.pipeline import (
    finish_pipeline_run,
    pipeline_config,
    prepare_default_data,
    publish_summary,
    start_pipeline_run,
)
from tasks.registry import find_champion, promote
from tasks.train import train

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = "synthetic-default"


class PipelineParams(BaseModel):
    """Parameters of one pipeline run (shown in the Prefect UI). Empty values: the config's."""

    data: str = Field("", description="GeoTIFF directory, glob or manifest CSV (image[,label][,split]; "
                                      "split=check rows are a labelled check set training never reads); "
                                      "empty: the embedded synthetic default")
    dataset: str = Field("", description="name of the shard dataset (empty: synthetic-default, or the "
                                         "data directory's / manifest's name)")
    work_dir: str = Field("segcore-work", description="directory for data, shards, runs and exports")
    experiment: str = Field("segcore", description="MLflow experiment")
    model_name: str = Field("segcore-student", description="MLflow registered model name")
    steps: int | None = Field(None, ge=0, description="training steps (train.steps)")
    batch_size: int | None = Field(None, ge=1, description="images per training step (train.batch_size)")
    patch_sizes: list[int] | None = Field(None, description="patch sizes drawn per step (data.patch_sizes)")
    seed: int | None = Field(None, description="seed of training and augmentation (train.seed, aug.seed)")
    warm_start: Literal["none", "champion"] = Field(
        "none", description="start training from the champion's checkpoint (recorded on the train run)")
    task_runner: Literal["serial", "thread", "dask"] = Field(
        "serial", description="shard building: in the task (serial), or one task per shard on threads or Dask")
    dask_address: str = Field("", description="existing Dask scheduler address for task_runner=dask")
    dask_workers: int = Field(2, ge=1, description="local Dask worker processes when no address is given")
    config_file: str = Field("configs/pipeline.yaml", description="YAML/JSON config file applied before the "
                                                                  "parameters (relative: to the repository)")
    overrides: list[str] = Field([], description="segcore config overrides, section.key=value")


def dataset_name(p: PipelineParams) -> str:
    if p.dataset:
        return p.dataset
    if not p.data:
        return DEFAULT_DATASET
    path = Path(p.data.split("*")[0].rstrip("/") or ".")
    name = (path.parent.name if path.suffix == ".csv" else path.name) or "default"
    return "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in name).lstrip(".-") or "default"


def config_flags(p: PipelineParams, data: str) -> dict[str, Any]:
    """The config keys the parameters set (applied over the config file, under the overrides)."""
    work = Path(p.work_dir).resolve()
    flags: dict[str, Any] = {
        "data.manifest": data if data.endswith(".csv") else "",
        "data.raster_paths": [data] if data and not data.endswith(".csv") else [],
        "data.processed_root": str(work / "processed"),
        "data.dataset": dataset_name(p),
        "train.out_dir": str(work / "runs"),
    }
    given = {"train.steps": p.steps, "train.batch_size": p.batch_size, "data.patch_sizes": p.patch_sizes,
             "train.seed": p.seed, "aug.seed": p.seed}
    flags.update({k: v for k, v in given.items() if v is not None})
    return flags


def config_file(p: PipelineParams) -> str:
    """``p.config_file`` as an absolute path (relative ones are relative to the repository)."""
    if not p.config_file:
        return ""
    path = Path(p.config_file)
    return str(path if path.is_absolute() else REPO_ROOT / path)


@flow(name="segcore-full-pipeline", log_prints=True)
def full_pipeline(params: PipelineParams | None = None) -> dict[str, Any]:
    """Build shards -> train -> evaluate -> export -> decide, each stage a child MLflow run of one parent."""
    p = params or PipelineParams()
    log = get_run_logger()
    work = Path(p.work_dir).resolve()
    parent = ""
    stages: dict[str, dict[str, Any]] = {}
    try:
        # Phase 0: data (the embedded default unless --data is given), config, parent run, champion.
        base = pipeline_config(config_file(p), config_flags(p, ""), p.overrides)
        data = p.data or prepare_default_data(str(work / "default-data"), base["data"]["synthetic_count"],
                                              base["data"]["synthetic_size"], base["train"]["seed"])
        config = pipeline_config(config_file(p), config_flags(p, data), p.overrides)
        parent = start_pipeline_run(p.experiment, str(work / "mlartifacts"), p.model_dump(), config, flow_run.id)
        stale = mark_stale_runs(parent)  # RUNNING runs of killed (SIGKILL) pipelines -> KILLED
        champion = find_champion(p.model_name)
        # Phase 1: shards (per-raster cache), then training on them.
        prebuilt = ""
        if p.task_runner != "serial":  # one task per shard on threads or Dask, then recorded like a serial build
            prebuilt = build_shards_fanout(config, p.task_runner, p.dask_address, p.dask_workers)
        shards = build_shards(config, parent, prebuilt_root=prebuilt)
        stages["build_shards"] = {**shards, "note": _build_note(shards)}
        warm = champion["checkpoint_uri"] if p.warm_start == "champion" else ""
        trained = train(config, parent, shards["manifest_uri"], warm)
        stages["train"] = {**trained, "note": f"{trained['steps']} steps, best loss {trained['best_loss']:.4f}"
                                              + (f", warm start from champion v{champion['version']}" if warm else "")}
        # Phase 2: the new model and the champion on the same evaluation set; export of the new one.
        evaluated = evaluate(config, parent, trained["checkpoint_uri"], shards["manifest_uri"],
                             champion["export_uri"])
        stages["evaluate"] = evaluated
        exported = export(config, parent, trained["checkpoint_uri"], evaluated["metrics_uri"], p.model_name)
        stages["export"] = {**exported, "note": f"version {exported['version']}"}
        # Phase 3: the decision, written on the version (description and tags).
        decision = promote(p.model_name, exported["version"], evaluated["metrics"], evaluated["labelled"],
                           evaluated["eval_set"], champion["version"], evaluated["champion_error"],
                           margin=config["eval"]["promote_margin"])
    except BaseException as exc:
        if parent:
            finish_pipeline_run(parent, status_for(exc), f"{type(exc).__name__}: {exc}")
        raise
    finish_pipeline_run(parent, "FINISHED")
    summary = {
        "parent_run_id": parent, "experiment": p.experiment, "stages": stages, "metrics": evaluated["metrics"],
        "eval_set": evaluated["eval_set"], "export_dir": exported["local_dir"], "model_name": p.model_name,
        "model_version": exported["version"], "decision": decision["outcome"], "champion_note": decision["reason"],
        "stale_runs_killed": stale,
    }
    publish_summary(summary)
    log.info("pipeline finished: parent MLflow run %s", parent)
    return summary


def _build_note(shards: dict[str, Any]) -> str:
    if shards["cached"]:
        return "reused cached shards"
    if shards["shards_written"] < 0:
        return "built by the fan-out flow"
    return f"{shards['shards_written']} shards written, {shards['shards_reused']} reused"


def _parser() -> argparse.ArgumentParser:
    """Command-line flags generated from :class:`PipelineParams`, so the two never drift apart."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for name, field in PipelineParams.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if name == "overrides":
            parser.add_argument(name, nargs="*", default=[], metavar="section.key=value", help=field.description)
        elif name == "patch_sizes":
            parser.add_argument(flag, type=lambda s: [int(x) for x in s.split(",")], default=argparse.SUPPRESS,
                                help=field.description + ", comma separated (default: from the config)")
        elif name in ("task_runner", "warm_start"):
            parser.add_argument(flag, choices=field.annotation.__args__, default=field.default,
                                help=field.description)
        elif field.default is None:  # absent: the config's value
            parser.add_argument(flag, type=int, default=argparse.SUPPRESS,
                                help=field.description + " (default: from the config)")
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
    print(f"metrics           : on {summary['eval_set']}")
    for key, value in sorted(summary["metrics"].items()):
        if key.startswith(("val/miou", "val/pixel_acc", "val/majority/miou", "val/dataset/miou", "proxy/",
                           "baseline/", "champion/val/miou", "champion/val/dataset/miou", "champion/proxy/")):
            print(f"  {key:<34} {value:.4f}")
    if summary.get("stale_runs_killed"):
        print(f"stale runs        : marked KILLED (their pipeline process is gone): "
              f"{', '.join(summary['stale_runs_killed'])}")
    from segcore.champion import predict_command

    print(f"predict           : {predict_command(summary['export_dir'])}")
    print(f"MLflow UI         : {t['ui']}")
    print("Prefect UI        : prefect server start --host 127.0.0.1  (then open http://127.0.0.1:4200)")


def main(argv: list[str] | None = None) -> int:
    from prefect.exceptions import TerminationSignal
    from pydantic import ValidationError

    from segcore.errors import SegcoreError, Terminated

    args = _parser().parse_args(argv)
    try:  # bad parameters are one line before any server starts, never a traceback
        params = PipelineParams(**vars(args))
        pipeline_config.fn(config_file(params), config_flags(params, ""), params.overrides)
    except ValidationError as exc:
        where = "; ".join(f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
                          for e in exc.errors())
        print(f"full_pipeline: error: {where}", file=sys.stderr)
        return 2
    except SegcoreError as exc:
        print(f"full_pipeline: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    try:
        # SIGTERM/SIGINT: runs marked KILLED, Prefect's temporary server stopped; a slow first start of
        # that server is waited for.
        with signals_raise(), patient_temporary_server():
            summary = full_pipeline(params)
    except (Terminated, TerminationSignal) as exc:  # ours outside a flow run, Prefect's inside
        signum = getattr(exc, "signum", getattr(exc, "signal", signal.SIGTERM))
        print(f"full_pipeline: stopped by signal {signum}; the MLflow runs are marked KILLED", file=sys.stderr)
        return 128 + signum
    except SegcoreError as exc:
        print(f"full_pipeline: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print_summary(summary)
    Path(params.work_dir, "last-summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
