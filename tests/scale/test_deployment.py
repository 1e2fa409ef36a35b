"""prefect.yaml deployed to a real Prefect server and run by a real process worker into a real MLflow server.

The Prefect CLI runs in subprocesses (``python -m prefect``) from the repository root with its own
PREFECT_HOME and a stale PWD (as a script would have), exactly as an operator would: create the
work pool, ``deploy --all``, start a worker, ``deployment run``. The nightly deployment runs twice
over a folder that gains one raster in between: the second run tiles only the new raster, scores
the new model and the champion on the same labelled check set, and writes the decision with both
scores into the new version's description. Then ``batch-predict`` segments the folder with the
champion.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from scale_support import REPO_ROOT, base_env, start
from test_mlflow_server import STAGES, TINY, pipeline_runs

pytestmark = [pytest.mark.server, pytest.mark.slow]
RUN_TIMEOUT_S = 600  # a bound that turns a stuck run into a failure, not a speed requirement


def prefect_cli(args: list[str], env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, f"prefect {' '.join(args)}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def wait_final(flow_run_id: str, worker) -> object:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + RUN_TIMEOUT_S
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            assert worker.popen.poll() is None, f"worker exited:\n{worker.tail()}"
            time.sleep(2)
    pytest.fail(f"flow run {flow_run_id} not finished within {RUN_TIMEOUT_S} s:\n{worker.tail()}")


def run_deployment(name: str, params: dict, env: dict[str, str], worker) -> str:
    out = prefect_cli(["deployment", "run", name, "--params", json.dumps(params)], env)
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)
    run = wait_final(flow_run_id, worker)
    assert run.state.is_completed(), f"{run.state}:\n{worker.tail()}"
    return flow_run_id


def write_manifest(data: Path, train: list[int], check: int) -> None:
    """``image,label,split`` rows: ``train`` scenes for training, one labelled ``check`` scene."""
    rows = [f"images/scene-{i:03d}.tif,labels/scene-{i:03d}.tif,train" for i in train]
    rows.append(f"images/scene-{check:03d}.tif,labels/scene-{check:03d}.tif,check")
    tmp = data / ".nightly.csv.tmp"
    tmp.write_text("image,label,split\n" + "\n".join(rows) + "\n")
    tmp.replace(data / "nightly.csv")


def test_nightly_deployment_retrains_incrementally_and_decides_on_the_same_set(
        use_prefect_server, use_mlflow_server, geotiffs, tmp_path):
    from prefect.client.orchestration import get_client

    env = base_env(PREFECT_HOME=str(tmp_path / "cli-home"), PREFECT_API_URL=use_prefect_server.url,
                   MLFLOW_TRACKING_URI=use_mlflow_server.url, PREFECT_WORKER_QUERY_SECONDS="1",
                   PREFECT_LOGGING_TO_API_ENABLED="true", OMP_NUM_THREADS="1", PWD="/")
    prefect_cli(["work-pool", "create", "segcore-process", "--type", "process", "--overwrite"], env)
    prefect_cli(["--no-prompt", "deploy", "--all"], env)  # no Kubernetes pool needed
    with get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
    assert set(deployments) == {"full-pipeline", "nightly-retrain", "batch-predict"}
    full, nightly = deployments["full-pipeline"], deployments["nightly-retrain"]
    # The worker will run the flow from this checkout, whatever PWD said.
    assert full.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}]
    assert {d.work_pool_name for d in deployments.values()} == {"segcore-process"}
    [schedule] = nightly.schedules
    assert schedule.schedule.cron == "0 2 * * *"
    assert schedule.schedule.timezone == "UTC"
    assert schedule.active
    # The GPU template deploys on its own once its pool exists (creating it needs no cluster).
    prefect_cli(["work-pool", "create", "segcore-k8s", "--type", "kubernetes", "--overwrite"], env)
    prefect_cli(["--no-prompt", "deploy", "--all", "--prefect-file", "deploy/k8s-gpu.prefect.yaml"], env)
    with get_client(sync_client=True) as client:
        gpu = client.read_deployment_by_name("segcore-full-pipeline/full-pipeline-k8s-gpu")
    assert gpu.work_pool_name == "segcore-k8s"
    assert gpu.job_variables["gpu_limit"] == 2
    assert "git_clone" in json.dumps(gpu.pull_steps)

    write_manifest(geotiffs, train=[0, 1], check=3)
    params = {"params": {"data": str(geotiffs / "nightly.csv"), "dataset": "nightly", "work_dir": str(tmp_path / "w"),
                         "experiment": "nightly-test", "model_name": "nightly-model", **TINY}}
    worker = start([sys.executable, "-m", "prefect", "worker", "start", "--pool", "segcore-process"],
                   tmp_path / "worker.log", env, cwd=tmp_path)
    try:
        first_id = run_deployment("segcore-full-pipeline/nightly-retrain", params, env, worker)
        write_manifest(geotiffs, train=[0, 1, 2], check=3)  # one new raster for the second night
        second_id = run_deployment("segcore-full-pipeline/nightly-retrain", params, env, worker)
        predicted = run_deployment("segcore-batch-predict/batch-predict", {
            "rasters": str(geotiffs / "images"), "out_dir": str(tmp_path / "labels"), "model_name": "nightly-model",
            "work_dir": str(tmp_path / "w")}, env, worker)
    finally:
        worker.stop(signals=2)

    client = MlflowClient(tracking_uri=use_mlflow_server.url)
    _, parent1, first = pipeline_runs(client, "nightly-test", first_id)
    _, parent2, second = pipeline_runs(client, "nightly-test", second_id)
    for parent, children in ((parent1, first), (parent2, second)):
        assert parent.info.status == "FINISHED"
        assert parent.info.run_name.startswith("nightly 20")
        assert set(children) == STAGES
        assert all(r.info.status == "FINISHED" for r in children.values())
    # Night 1 tiles 3 rasters (2 train + 1 check); night 2 only the new one, reusing the other 3.
    build1, build2 = first["build_shards"].data.metrics, second["build_shards"].data.metrics
    assert (build1["shards/shards_written"], build1["shards/shards_reused"]) == (3, 0)
    assert (build2["shards/shards_written"], build2["shards/shards_reused"]) == (1, 3)
    assert build2["shards/rasters"] == 4
    # Night 2 scores the new model and the champion (night 1's version) on the same check set.
    ev1, ev2 = first["evaluate"], second["evaluate"]
    assert ev1.data.tags["segcore.eval_split"] == ev2.data.tags["segcore.eval_split"] == "check"
    m = ev2.data.metrics
    assert m["champion/val/images"] == m["val/images"] == ev1.data.metrics["val/images"]
    assert m["champion/val/miou"] == pytest.approx(ev1.data.metrics["val/miou"], abs=0.02)
    v1 = client.get_model_version("nightly-model", first["export"].data.tags["segcore.model_version"])
    v2 = client.get_model_version("nightly-model", second["export"].data.tags["segcore.model_version"])
    assert v1.tags["segcore.decision"] == "promoted"
    assert v2.tags["segcore.decision"] in ("promoted", "kept champion")
    assert f"v{v2.version} {m['val/miou']:.4f}" in v2.description
    assert f"champion v{v1.version}: {m['champion/val/miou']:.4f}" in v2.description
    assert float(v2.tags["segcore.decision.challenger"]) == pytest.approx(m["val/miou"])
    assert float(v2.tags["segcore.decision.champion"]) == pytest.approx(m["champion/val/miou"])
    promoted = m["val/miou"] - m["champion/val/miou"] > float(v2.tags["segcore.decision.margin"])
    assert client.get_model_version_by_alias("nightly-model", "champion").version == (
        v2.version if promoted else v1.version)
    # batch-predict segmented every raster of the folder with the champion.
    assert predicted
    assert sorted(p.name for p in (tmp_path / "labels").glob("*.labels.tif")) == [
        f"scene-{i:03d}.labels.tif" for i in range(4)]
