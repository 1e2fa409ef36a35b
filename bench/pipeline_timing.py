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


if __name__ == "__main__":
    main()
