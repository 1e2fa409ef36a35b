"""The full flow tracking into a real MLflow server: runs in its SQLite store, artifacts over HTTP."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from flows.full_pipeline import PipelineParams, full_pipeline

TINY = dict(steps=3, batch_size=2, patch_sizes=[64],
            overrides=["data.synthetic_count=3", "data.synthetic_size=128", "data.tile_size=128",
                       "data.slic_region_size=16", "eval.num_overlays=1"])
STAGES = {"build_shards", "train", "evaluate", "export"}


def pipeline_runs(client: MlflowClient, experiment: str, flow_run_id: str) -> tuple:
    """The parent run of the pipeline run ``flow_run_id`` and its children by stage."""
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} on {client.tracking_uri}"
    parents = client.search_runs([exp.experiment_id], f"tags.`prefect.flow_run_id` = '{flow_run_id}'")
    assert len(parents) == 1
    parent = parents[0]
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return exp, parent, {r.data.tags["segcore.stage"]: r for r in children}


@pytest.mark.server
def test_pipeline_tracks_into_the_mlflow_server(use_prefect_server, use_mlflow_server, tmp_path):
    server = use_mlflow_server
    params = PipelineParams(work_dir=str(tmp_path / "work"), experiment="server-test", model_name="server-model",
                            **TINY)
    summary = full_pipeline(params)

    client = MlflowClient(tracking_uri=server.url)
    parent_run = client.get_run(summary["parent_run_id"])
    exp, parent, children = pipeline_runs(client, "server-test", parent_run.data.tags["prefect.flow_run_id"])
    assert parent.info.run_id == summary["parent_run_id"]
    assert parent.info.status == "FINISHED"
    assert set(children) == STAGES
    assert all(r.info.status == "FINISHED" for r in children.values())
    # Artifacts live behind the server (mlflow-artifacts:/ URIs), in its --artifacts-destination.
    assert exp.artifact_location.startswith("mlflow-artifacts:/")
    export_run = children["export"]
    assert export_run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert "export/model.npz" in {a.path for a in client.list_artifacts(export_run.info.run_id, "export")}
    served = client.download_artifacts(export_run.info.run_id, "export/model.npz", str(tmp_path / "dl"))
    stored = list((server.home / "artifacts").rglob(f"{export_run.info.run_id}/artifacts/export/model.npz"))
    assert len(stored) == 1
    with open(served, "rb") as a, open(stored[0], "rb") as b:
        assert a.read() == b.read()
    assert (tmp_path / "work").is_dir()
    assert not (tmp_path / "work" / "mlartifacts").exists()  # nothing fell back to a local store
    # The registry is the server's too.
    version = client.get_model_version("server-model", str(summary["model_version"]))
    assert version.run_id == export_run.info.run_id
