"""Rule 2: a killed pipeline leaves truthful lineage. Real ``python flows/full_pipeline.py`` processes,
real signals, a real SQLite MLflow store and Prefect's real temporary API server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from tests.reliability.conftest import REPO, segcore_env
from tests.reliability.test_locks_and_signals import wait_for

pytestmark = pytest.mark.slow

EXPERIMENT = "reliability-kill"
TINY = ["--batch-size", "2", "--patch-sizes", "64", "--experiment", EXPERIMENT, "--model-name", "kill-model",
        "data.synthetic_count=3", "data.synthetic_size=128", "data.tile_size=128", "data.slic_region_size=16",
        "eval.num_overlays=1"]


@pytest.fixture
def store(tmp_path: Path) -> tuple[dict[str, str], MlflowClient]:
    env = segcore_env()
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", PREFECT_HOME=str(tmp_path / "prefect"),
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="600")  # 2 busy cores: startup can be slow
    env.pop("PREFECT_API_URL", None)
    return env, MlflowClient(env["MLFLOW_TRACKING_URI"])


def _start(tmp_path: Path, env: dict[str, str], steps: int, *overrides: str) -> subprocess.Popen:
    argv = [sys.executable, str(REPO / "flows" / "full_pipeline.py"), "--work-dir", str(tmp_path / "work"),
            "--steps", str(steps), *TINY, *overrides]
    return subprocess.Popen(argv, cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _runs(client: MlflowClient) -> list:
    exp = client.get_experiment_by_name(EXPERIMENT)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


def _training(client: MlflowClient) -> bool:
    """A train stage run is RUNNING (the pipeline is mid-training)."""
    return any(r.data.tags.get("segcore.stage") == "train" and r.info.status == "RUNNING" for r in _runs(client))


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _gone(procs: list[psutil.Process]) -> bool:
    _, alive = psutil.wait_procs(procs, timeout=0)
    return not alive


def test_sigterm_marks_runs_killed_and_stops_the_prefect_server(tmp_path: Path, store) -> None:
    env, client = store
    proc = _start(tmp_path, env, steps=100_000)
    wait_for(lambda: _training(client), proc, "training started")
    children = _descendants(proc.pid)
    assert any("uvicorn" in " ".join(c.cmdline()) or "prefect" in " ".join(c.cmdline()) for c in children)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by signal 15" in err
    statuses = {r.data.tags.get("segcore.stage"): r.info.status for r in _runs(client)}
    assert statuses["pipeline"] == "KILLED"
    assert statuses["train"] == "KILLED"
    assert "RUNNING" not in statuses.values()
    wait_for(lambda: _gone(children), None, "the Prefect server and every other child stopped")  # no orphans


def test_after_sigkill_the_next_run_marks_stale_runs_killed_and_resumes_training(tmp_path: Path, store) -> None:
    env, client = store
    proc = _start(tmp_path, env, 200, "train.checkpoint_every=10")
    wait_for(lambda: any((tmp_path / "work" / "runs").glob("*/checkpoints/last.pt")), proc, "a checkpoint was written")
    children = _descendants(proc.pid)
    servers = [c for c in children if "uvicorn" in " ".join(c.cmdline())]
    assert servers  # Prefect's temporary API server
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    try:
        assert not _gone(servers)  # SIGKILL cannot stop Prefect's temporary server ...
        killed = {r.data.tags["segcore.stage"]: r.info.run_id for r in _runs(client) if r.info.status == "RUNNING"}
        assert {"pipeline", "train"} <= set(killed)  # ... and leaves the runs RUNNING ...
        second = _start(tmp_path, env, 200, "train.checkpoint_every=10")  # same config and data
        out, err = second.communicate(timeout=900)
        assert second.returncode == 0, err
        assert _gone(servers)  # ... the next pipeline run stopped that orphaned server (by PID and start time)
        stopped = client.get_run(killed["pipeline"]).data.tags["segcore.prefect_server_stopped"]
        assert f"PID {servers[0].pid}" in stopped
    finally:
        for child in children:
            if child.is_running():
                child.kill()
    assert "stale runs" in out
    assert killed["pipeline"] in out  # ... and the next pipeline run says it marked them
    for stage, run_id in killed.items():
        run = client.get_run(run_id)
        assert run.info.status == "KILLED", stage
        reason = run.data.tags["segcore.killed_reason"]
        assert f"process {proc.pid} on " in reason
        assert "is gone" in reason
    assert all(r.info.status != "RUNNING" for r in _runs(client))
    new_train = next(r for r in _runs(client) if r.data.tags.get("segcore.stage") == "train"
                     and r.info.status == "FINISHED")
    assert new_train.data.tags["segcore.resumed_from"] == killed["train"]  # lineage says where it continued
    assert int(new_train.data.tags["segcore.resumed_step"]) >= 10  # from the checkpoint, not from step 0
    steps = [m.step for m in client.get_metric_history(new_train.info.run_id, "train/total")]
    assert steps
    assert min(steps) > int(new_train.data.tags["segcore.resumed_step"])  # no step before it was trained again
