"""The pipeline with ``train.nproc=2``: the train task launches torchrun (2 gloo ranks on the CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from test_mlflow_server import TINY

from flows.full_pipeline import PipelineParams, full_pipeline

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_pipeline_trains_on_two_torchrun_ranks(use_prefect_server, use_mlflow_server, monkeypatch, tmp_path):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # 2 ranks x 1 thread on a 2-core machine
    tiny = {**TINY, "overrides": [*TINY["overrides"], "train.nproc=2", "train.log_every=1"]}
    params = PipelineParams(work_dir=str(tmp_path / "work"), experiment="ddp-pipeline", model_name="ddp-model", **tiny)
    summary = full_pipeline(params)

    train_id = summary["stages"]["train"]["run_id"]
    run_dir = tmp_path / "work" / "runs" / train_id
    result = json.loads((run_dir / "fit-result.json").read_text())  # written by rank 0 under torchrun
    assert result["world_size"] == 2
    assert json.loads((run_dir / "launch-config.json").read_text())["train"]["nproc"] == 2
    client = MlflowClient()
    run = client.get_run(train_id)
    assert run.data.metrics["train/nproc"] == 2
    # Rank 0 alone logged the per-step metrics into the stage's MLflow run: one value per step.
    assert [m.step for m in client.get_metric_history(train_id, "train/total")] == [1, 2, 3]
    assert run.data.params["train.nproc"] == "2"
    assert Path(summary["export_dir"], "model.npz").is_file()
    assert client.get_run(summary["parent_run_id"]).info.status == "FINISHED"
