"""The full flow on tiny synthetic data, under a real Prefect API and a real MLflow store."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow import MlflowClient

from flows.full_pipeline import PipelineParams, full_pipeline
from tasks.registry import promote

TINY = dict(steps=3, batch_size=2, patch_sizes=[64], synthetic_count=3, synthetic_size=128,
            overrides=["data.slic_region_size=16", "eval.num_overlays=1"])


def _children(client: MlflowClient, parent_id: str) -> dict:
    exp = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    return {r.data.tags["segcore.stage"]: r for r in runs}


def _artifacts(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    out = set()
    for item in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return out


@pytest.fixture(scope="module")
def first_run(orchestration, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    params = PipelineParams(work_dir=str(work), experiment="test-pipeline", model_name="test-model", **TINY)
    return params, full_pipeline(params)


def test_parent_run_has_four_stage_children_with_artifacts(first_run):
    _, summary = first_run
    client = MlflowClient()
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["segcore.version"]
    assert "git.commit" in parent.data.tags
    assert parent.data.params["param.steps"] == "3"
    children = _children(client, summary["parent_run_id"])
    assert set(children) == {"build_shards", "train", "evaluate", "export"}
    assert all(r.info.status == "FINISHED" for r in children.values())
    arts = {stage: _artifacts(client, r.info.run_id) for stage, r in children.items()}
    assert "shards/manifest.json" in arts["build_shards"]
    assert "shards/preview.png" in arts["build_shards"]
    assert any(a.endswith("index.csv") for a in arts["build_shards"])
    assert {"config.json", "metrics.jsonl", "checkpoints/last.pt"} <= arts["train"]
    assert {"eval/metrics.json", "eval/per_image.csv"} <= arts["evaluate"]
    assert any(a.startswith("eval/overlays/") and a.endswith(".png") for a in arts["evaluate"])
    assert {"export/model.npz", "export/meta.json", "export/metrics.json"} <= arts["export"]
    # Per-step training metrics were logged in the train run.
    history = client.get_metric_history(children["train"].info.run_id, "train/total")
    assert [m.step for m in history] == [3]
    # Stages take their inputs from the previous stage's run.
    assert children["train"].data.tags["segcore.input_run_id"] == children["build_shards"].info.run_id
    assert children["evaluate"].data.tags["segcore.input_run_id"] == children["train"].info.run_id


def test_export_in_mlflow_runs_in_the_numpy_runtime(first_run, tmp_path):
    import mlflow

    from segcore.data.synthetic import generate_scene
    from segcore.runtime import load_export

    _, summary = first_run
    local = mlflow.artifacts.download_artifacts(run_id=summary["stages"]["export"]["run_id"], artifact_path="export",
                                                dst_path=str(tmp_path))
    model = load_export(local)
    labels = model.segment(generate_scene(96, seed=3).image, k=4)
    assert labels.shape == (96, 96)
    assert 1 <= len(np.unique(labels)) <= 4
    meta = json.loads((tmp_path / "export" / "meta.json").read_text())
    assert meta["source_run_id"] == summary["stages"]["train"]["run_id"]


def test_first_model_becomes_champion_and_is_registered(first_run):
    _, summary = first_run
    client = MlflowClient()
    champ = client.get_model_version_by_alias("test-model", "champion")
    assert champ.version == summary["model_version"]
    assert "first model" in champ.tags["segcore.promotion"]


def test_second_run_reuses_cached_shards(first_run):
    params, summary = first_run
    again = full_pipeline(params)
    client = MlflowClient()
    build = _children(client, again["parent_run_id"])["build_shards"]
    assert build.data.tags["segcore.cached"] == "True"
    assert build.data.tags["segcore.reused_run_id"] == summary["stages"]["build_shards"]["run_id"]
    # Same seed, same data: the same score, so the champion does not move.
    assert again["metrics"]["val/miou"] == pytest.approx(summary["metrics"]["val/miou"])
    version = client.get_model_version("test-model", again["model_version"])
    assert version.tags["segcore.promotion"].startswith("not promoted")
    assert client.get_model_version_by_alias("test-model", "champion").version == summary["model_version"]


def test_champion_moves_only_on_improvement(orchestration):
    from tasks.registry import register

    client = MlflowClient()
    exp = client.create_experiment("promotion-test")
    run_id = client.create_run(exp).info.run_id
    v1 = register("promo-model", f"runs:/{run_id}/export", run_id, {"val/miou": 0.40})
    assert promote.fn("promo-model", v1, "val/miou", 0.40)["promoted"]
    v2 = register("promo-model", f"runs:/{run_id}/export", run_id, {"val/miou": 0.35})
    worse = promote.fn("promo-model", v2, "val/miou", 0.35)
    assert not worse["promoted"]
    assert "does not beat" in worse["reason"]
    assert client.get_model_version_by_alias("promo-model", "champion").version == v1
    v3 = register("promo-model", f"runs:/{run_id}/export", run_id, {"val/miou": 0.45})
    assert promote.fn("promo-model", v3, "val/miou", 0.45)["promoted"]
    assert client.get_model_version_by_alias("promo-model", "champion").version == v3
    assert "does not beat" in client.get_model_version("promo-model", v2).tags["segcore.promotion"]


def test_failing_stage_fails_the_flow_with_its_message(orchestration, tmp_path):
    bad = tmp_path / "not-a-raster.tif"
    bad.write_text("this is not a GeoTIFF")
    params = PipelineParams(work_dir=str(tmp_path / "work"), experiment="test-failing", data=str(bad), **TINY)
    with pytest.raises(Exception, match=r"not-a-raster\.tif"):
        full_pipeline(params)
    client = MlflowClient()
    exp = client.get_experiment_by_name("test-failing")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`segcore.stage` = 'pipeline'")
    assert parents[0].info.status == "FAILED"
    assert "not-a-raster.tif" in parents[0].data.tags["segcore.error"]
    build = _children(client, parents[0].info.run_id)["build_shards"]
    assert build.info.status == "FAILED"


def test_thread_fanout_writes_the_same_tiles_as_the_serial_build(first_run, tmp_path):
    params, summary = first_run
    fanout = params.model_copy(update={"dataset": "fanout", "task_runner": "thread", "steps": 1})
    again = full_pipeline(fanout)
    build = _children(MlflowClient(), again["parent_run_id"])["build_shards"]
    assert build.data.tags["segcore.cached"] == "False"
    serial_root = summary["stages"]["build_shards"]["root"]
    fanout_root = again["stages"]["build_shards"]["root"]
    from pathlib import Path

    serial = {p.relative_to(serial_root): p.read_bytes() for p in Path(serial_root).glob("*/shard-*/*.tif")}
    fanned = {p.relative_to(fanout_root): p.read_bytes() for p in Path(fanout_root).glob("*/shard-*/*.tif")}
    assert serial
    assert serial == fanned
