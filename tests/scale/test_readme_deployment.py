"""The README's deployment block, run unchanged as a bash script, from a copy of the checkout.

Only the ports come from the environment (the block reads ``PREFECT_PORT`` / ``MLFLOW_PORT`` with
4200 / 5000 as defaults), so the test does not collide with servers already running. The block
starts both servers on 127.0.0.1 in their own process groups and writes their pids; the test waits
for the deployment run it submits to be picked up by the worker and to reach MLflow (the worker's
environment carries the tracking URI), checks over MLflow's REST API that the experiment opens on
its runs in the UI, cancels the run, and stops every process group by the pids the block wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from scale_support import REPO_ROOT, START_TIMEOUT_S, base_env, free_port

pytestmark = [pytest.mark.server, pytest.mark.slow]
COPIED = ("prefect.yaml", "flows", "configs", "deploy")
SECTION = "## Deployments, UIs and scheduled retraining"


def readme_block() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index(SECTION):]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def stop_group(pid: int, grace_s: float = 30) -> None:
    """SIGTERM twice to process group ``pid`` (an idle worker needs two), SIGKILL what is left."""
    for _ in range(2):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        time.sleep(1)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def wait_for(what: str, check, log: Path, timeout_s: float = START_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            found = check()
            if found:
                return found
        time.sleep(2)
    pytest.fail(f"{what}: not within {timeout_s} s; worker log:\n{log.read_text(errors='replace')[-4000:]}")


def test_readme_deployment_block_runs_as_a_script(tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in COPIED:
        src = REPO_ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, checkout / name)
    prefect_port, mlflow_port = free_port(), free_port()
    env = base_env(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_PORT=str(prefect_port),
                   MLFLOW_PORT=str(mlflow_port), OMP_NUM_THREADS="1", PREFECT_WORKER_QUERY_SECONDS="1")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])  # prefect, mlflow
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        env.pop(key, None)
    servers = checkout / "segcore-work" / "servers"
    script = tmp_path / "deploy.sh"
    script.write_text(readme_block())
    try:
        out = subprocess.run(["bash", str(script)], cwd=checkout, env=env, capture_output=True, text=True,
                             timeout=600, start_new_session=True)
        assert out.returncode == 0, f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        flow_run_id = re.findall(r"UUID: ([0-9a-f-]{36})", out.stdout)[-1]  # the last command's flow run
        _check_deployed_run(prefect_port, mlflow_port, flow_run_id, servers)
    finally:
        for name in ("worker", "mlflow", "prefect"):
            pid_file = servers / f"{name}.pid"
            if pid_file.exists():
                stop_group(int(pid_file.read_text()))


def _check_deployed_run(prefect_port: int, mlflow_port: int, flow_run_id: str, servers: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Cancelling

    api = f"http://127.0.0.1:{prefect_port}/api"
    mlflow = f"http://127.0.0.1:{mlflow_port}"
    log = servers / "worker.log"
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        names = {d.name for d in client.read_deployments()}
        assert names == {"full-pipeline", "nightly-retrain", "batch-predict"}
        assert client.read_work_pool("segcore-process").type == "process"
        # The worker picks the run up; the flow run tracks into the MLflow server (worker env).
        wait_for("flow run running", lambda: client.read_flow_run(flow_run_id).state.is_running(), log)
        exp = wait_for("experiment segcore on the MLflow server", lambda: get_json(
            f"{mlflow}/api/2.0/mlflow/experiments/get-by-name?experiment_name=segcore")["experiment"], log)
        tags = {t["key"]: t["value"] for t in exp.get("tags", [])}
        assert tags["mlflow.experimentKind"] == "custom_model_development"  # opens on its runs table
        body = json.dumps({"experiment_ids": [exp["experiment_id"]],
                           "filter": f"tags.`prefect.flow_run_id` = '{flow_run_id}'"}).encode()

        def parent_run():
            req = urllib.request.Request(f"{mlflow}/api/2.0/mlflow/runs/search", body,
                                         {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read()).get("runs")

        [parent] = wait_for("the pipeline's parent run in MLflow", parent_run, log)
        assert parent["info"]["run_name"].startswith("synthetic-default 20")
        client.set_flow_run_state(flow_run_id, Cancelling(), force=True)
        wait_for("flow run cancelled", lambda: client.read_flow_run(flow_run_id).state.is_final(), log)
