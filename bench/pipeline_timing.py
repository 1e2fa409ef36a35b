"""Wall time of ``python flows/full_pipeline.py`` and its split by stage, from the MLflow run records.

Runs the default pipeline as a user would (a subprocess, fresh working directory, fresh Prefect
home, so the temporary Prefect server starts from nothing), then reads the parent and child runs
from that run's ``mlflow.db``. Each stage's time is its MLflow child run (start to end: the segcore
work plus its own MLflow logging). Orchestration overhead = flow wall time - sum of the stages.

    python bench/pipeline_timing.py                 # default pipeline
    python bench/pipeline_timing.py -- --steps 100  # flags after -- go to the flow
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("build_shards", "train", "evaluate", "export")


def main() -> None:
    extra = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    work = Path(tempfile.mkdtemp(prefix="segcore-pipeline-"))
    env = {**os.environ, "PREFECT_HOME": str(work / ".prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "flows" / "full_pipeline.py"), *extra], cwd=work, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name("segcore")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("segcore.stage") == "pipeline")
    stages = {r.data.tags["segcore.stage"]: (r.info.end_time - r.info.start_time) / 1000 for r in runs
              if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    flow_s = (parent.info.end_time - parent.info.start_time) / 1000
    print(f"process wall time (python flows/full_pipeline.py {' '.join(extra)}): {wall:.1f} s; "
          f"parent MLflow run {flow_s:.1f} s")
    print("| stage | seconds | share of wall time |")
    print("|---|---|---|")
    for name in STAGES:
        print(f"| {name} | {stages[name]:.1f} | {stages[name] / wall:.0%} |")
    other = wall - sum(stages.values())
    print(f"| orchestration (Prefect server start, task runs, default data, parent run, summary) | {other:.1f} | "
          f"{other / wall:.0%} |")
    print(f"| **total** | {wall:.1f} | 100% |")
    train_run = next(r for r in runs if r.data.tags.get("segcore.stage") == "train"
                     and r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
    pipeline_ips = train_run.data.metrics["images_per_s"]
    bare_ips, threads = bare_step_images_per_s(client, train_run.info.run_id, work)
    print()
    print(f"| training throughput ({threads} thread(s)) | images/s | vs bare step |")
    print("|---|---|---|")
    print(f"| bare train_step (batches drawn beforehand) | {bare_ips:.2f} | 1.00 |")
    print(f"| pipeline train stage (fit: data, steps, logging, checkpoints) | {pipeline_ips:.2f} | "
          f"{pipeline_ips / bare_ips:.2f} |")


def bare_step_images_per_s(client, run_id: str, work: Path, steps: int = 12) -> tuple[float, int]:
    """Images/s of the bare training step with the train run's own config, on its shards."""
    import json

    import torch
    from threads import prepare_steps, step_images_per_s  # bench/ is on sys.path when run as a script

    from segcore.config import Config
    from segcore.training import training_threads

    os.chdir(work)  # relative paths of the config are the pipeline's, which ran here
    path = client.download_artifacts(run_id, "config.json", str(work / "bench-config"))
    cfg = Config.from_dict(json.loads(Path(path).read_text()))
    threads = training_threads(cfg.train.threads)
    torch.set_num_threads(threads)
    trainee, placement, batches = prepare_steps(cfg, steps, cfg.train.seed)
    return step_images_per_s(trainee, placement, batches, cfg), threads


if __name__ == "__main__":
    main()
