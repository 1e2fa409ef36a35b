"""prefect.yaml deployed to a real Prefect server and run by a real process worker into a real MLflow server.

The Prefect CLI runs in subprocesses (``python -m prefect``) from the repository root with its own
PREFECT_HOME and a stale PWD (as a script would have), exactly as an operator would: create the work
pools, ``deploy --all``, start a worker, ``deployment run`` with tiny parameters.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient
from scale_support import REPO_ROOT, base_env, start
from test_mlflow_server import STAGES, TINY, pipeline_runs

pytestmark = pytest.mark.server
RUN_TIMEOUT_S = 480  # a bound that turns a stuck run into a failure, not a speed requirement


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


def test_deploy_run_by_worker_into_mlflow(use_prefect_server, use_mlflow_server, tmp_path):
    from prefect.client.orchestration import get_client

    env = base_env(PREFECT_HOME=str(tmp_path / "cli-home"), PREFECT_API_URL=use_prefect_server.url,
                   MLFLOW_TRACKING_URI=use_mlflow_server.url, PREFECT_WORKER_QUERY_SECONDS="1",
                   PREFECT_LOGGING_TO_API_ENABLED="true", OMP_NUM_THREADS="1", PWD="/")
    prefect_cli(["work-pool", "create", "segcore-process", "--type", "process"], env)
    prefect_cli(["work-pool", "create", "segcore-k8s", "--type", "kubernetes"], env)
    prefect_cli(["--no-prompt", "deploy", "--all"], env)

    with get_client(sync_client=True) as client:
        full = client.read_deployment_by_name("segcore-full-pipeline/full-pipeline")
        nightly = client.read_deployment_by_name("segcore-full-pipeline/nightly-retrain")
        gpu = client.read_deployment_by_name("segcore-full-pipeline/full-pipeline-k8s-gpu")
    # The worker will run the flow from this checkout, whatever PWD said.
    assert full.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}]
    assert full.work_pool_name == "segcore-process"
    [schedule] = nightly.schedules
    assert schedule.schedule.cron == "0 2 * * *"
    assert schedule.schedule.timezone == "UTC"
    assert schedule.active
    assert gpu.work_pool_name == "segcore-k8s"
    assert gpu.job_variables["gpu_limit"] == 1
    assert "git_clone" in json.dumps(gpu.pull_steps)

    worker = start([sys.executable, "-m", "prefect", "worker", "start", "--pool", "segcore-process"],
                   tmp_path / "worker.log", env, cwd=tmp_path)
    try:
        params = {"params": {"work_dir": str(tmp_path / "work"), "experiment": "deploy-test",
                             "model_name": "deploy-model", **TINY}}
        out = prefect_cli(["deployment", "run", "segcore-full-pipeline/full-pipeline", "--params",
                           json.dumps(params)], env)
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)
        run = wait_final(flow_run_id, worker)
        assert run.state.is_completed(), f"{run.state}:\n{worker.tail()}"
        assert run.deployment_id == full.id
    finally:
        worker.stop(signals=2)

    client = MlflowClient(tracking_uri=use_mlflow_server.url)
    _, parent, children = pipeline_runs(client, "deploy-test", flow_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["param.steps"] == "3"
    assert set(children) == STAGES
    assert all(r.info.status == "FINISHED" for r in children.values())
    assert "export/model.npz" in {a.path for a in client.list_artifacts(children["export"].info.run_id, "export")}
