"""The full flow on tiny synthetic data, under a real Prefect API and a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from flows.full_pipeline import PipelineParams, full_pipeline

TINY_OVERRIDES = ["data.synthetic_count=3", "data.synthetic_size=128", "data.tile_size=128",
                  "data.slic_region_size=16", "eval.num_overlays=1"]
TINY = dict(steps=3, batch_size=2, patch_sizes=[64], overrides=TINY_OVERRIDES)


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
    assert parent.info.run_name.startswith("synthetic-default 20")  # dataset, then the UTC time
    assert parent.data.tags["segcore.version"]
    assert "git.commit" in parent.data.tags
    assert parent.data.params["param.steps"] == "3"
    # The experiment opens on its runs in MLflow 3's UI (not the GenAI view).
    exp = client.get_experiment(parent.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
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
    history = client.get_metric_history(children["train"].info.run_id, "train/total")
    assert [m.step for m in history] == [3]
    # Stages take their inputs from the artifact URIs the previous stage returned.
    build_id, train_id = children["build_shards"].info.run_id, children["train"].info.run_id
    assert children["train"].data.tags["segcore.manifest_uri"] == f"runs:/{build_id}/shards/manifest.json"
    assert children["train"].data.tags["segcore.input_run_id"] == build_id
    assert children["evaluate"].data.tags["segcore.checkpoint_uri"] == f"runs:/{train_id}/checkpoints/last.pt"
    assert children["evaluate"].data.tags["segcore.eval_split"] == "val"


def test_train_run_logs_its_dataset_input(first_run):
    _, summary = first_run
    run = MlflowClient().get_run(summary["stages"]["train"]["run_id"])
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "synthetic-default"
    assert dataset_input.dataset.digest == summary["stages"]["train"]["dataset_digest"]
    tags = {t.key: t.value for t in dataset_input.tags}
    assert tags["mlflow.data.context"] == "training"
    assert tags["segcore.rasters"] == "3"


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


def test_first_model_becomes_champion_with_the_decision_in_its_description(first_run):
    _, summary = first_run
    client = MlflowClient()
    champ = client.get_model_version_by_alias("test-model", "champion")
    assert champ.version == summary["model_version"]
    assert "first model" in champ.tags["segcore.promotion"]
    assert champ.tags["segcore.decision"] == "promoted"
    assert champ.description.startswith("Decision: promoted. val/dataset/miou on val (labelled)")


def test_second_run_scores_champion_and_challenger_on_the_same_set(first_run):
    params, summary = first_run
    again = full_pipeline(params)
    client = MlflowClient()
    build = _children(client, again["parent_run_id"])["build_shards"]
    assert build.data.tags["segcore.cached"] == "True"
    assert build.data.tags["segcore.reused_run_id"] == summary["stages"]["build_shards"]["run_id"]
    m = again["metrics"]
    # Same seed, same data: the champion (the first run's export) and the challenger (this run's
    # checkpoint, exported with the same codebook by the evaluate stage) are scored as segcore
    # predict runs them and agree exactly, and the champion scores on this run's set what it
    # scored on the first run's (the same set).
    assert m["champion/val/images"] == m["val/images"]
    assert m["champion/val/miou"] == summary["metrics"]["val/miou"]
    for key in ("val/miou", "val/pixel_acc", "val/dataset/miou"):
        assert m[key] == m[f"champion/{key}"], key
    version = client.get_model_version("test-model", again["model_version"])
    assert version.tags["segcore.decision"] == "kept champion"
    assert version.tags["segcore.promotion"].startswith("not promoted")
    assert f"v{again['model_version']} {m['val/dataset/miou']:.4f}" in version.description
    assert f"champion v{summary['model_version']}: {m['champion/val/dataset/miou']:.4f}" in version.description
    assert client.get_model_version_by_alias("test-model", "champion").version == summary["model_version"]


def test_failing_stage_fails_the_flow_and_the_parent_run(orchestration, tmp_path):
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


def test_unlabelled_data_trains_on_every_raster_and_registers_a_challenger(orchestration, tmp_path):
    from segcore.data.synthetic import write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "scenes", count=3, size=128, seed=11)
    images = str(root / "images")  # a directory of GeoTIFFs, no labels
    params = PipelineParams(data=images, work_dir=str(tmp_path / "work"), experiment="test-unlabelled",
                            model_name="unlabelled-model", **TINY)
    first = full_pipeline(params)
    manifest = json.loads((Path(first["stages"]["build_shards"]["root"]) / "manifest.json").read_text())
    assert set(manifest["splits"]) == {"train"}  # nothing held out for proxies
    assert manifest["counts"]["rasters"] == 3
    assert first["eval_set"].startswith("train (unlabelled")
    assert first["decision"] == "promoted"  # the first model: nothing to compare with
    second = full_pipeline(params.model_copy(update={"warm_start": "champion"}))
    client = MlflowClient()
    train = client.get_run(second["stages"]["train"]["run_id"])
    champion_train = first["stages"]["train"]["run_id"]
    assert train.data.tags["segcore.warm_start_uri"] == f"runs:/{champion_train}/checkpoints/last.pt"
    assert second["decision"] == "challenger"
    version = client.get_model_version("unlabelled-model", second["model_version"])
    assert "no label-free criterion has been shown to track mIoU" in version.description
    assert "champion/proxy/two_view_consistency" in second["metrics"]
    assert client.get_model_version_by_alias("unlabelled-model", "challenger").version == second["model_version"]
    assert client.get_model_version_by_alias("unlabelled-model", "champion").version == first["model_version"]


def test_thread_fanout_writes_the_same_tiles_as_the_serial_build(first_run, tmp_path):
    params, summary = first_run
    fanout = params.model_copy(update={"dataset": "fanout", "task_runner": "thread", "steps": 1})
    again = full_pipeline(fanout)
    build = _children(MlflowClient(), again["parent_run_id"])["build_shards"]
    assert build.data.tags["segcore.cached"] == "False"
    serial_root = summary["stages"]["build_shards"]["root"]
    fanout_root = again["stages"]["build_shards"]["root"]
    serial = {p.relative_to(serial_root): p.read_bytes() for p in Path(serial_root).glob("*/shard-*/*.tif")}
    fanned = {p.relative_to(fanout_root): p.read_bytes() for p in Path(fanout_root).glob("*/shard-*/*.tif")}
    assert serial
    assert serial == fanned
