"""`segcore predict` without --export finds the registry's champion on a real MLflow tracking server."""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

from segcore.champion import find_champion
from segcore.cli.main import main as cli_main
from segcore.codebook import CodebookRequest
from segcore.config import Config
from segcore.data.synthetic import generate_scene, write_scene_geotiff
from segcore.export import export_model
from segcore.models import build_segmenter
from segcore.runtime import load_export, read_meta

SMALL = {"student.width": 8, "student.groups": 4, "student.embed_dim": 8, "model.embed_dim": 8}


def _register(client: MlflowClient, export_dir, model: str, experiment: str) -> str:
    exp = client.create_experiment(experiment)
    run = client.create_run(exp).info.run_id
    client.log_artifacts(run, str(export_dir), "export")
    client.set_terminated(run)
    client.create_registered_model(model)
    version = client.create_model_version(model, source=f"runs:/{run}/export", run_id=run).version
    client.set_registered_model_alias(model, "champion", version)
    return run


@pytest.mark.server
def test_predict_uses_the_registry_champion(use_mlflow_server, tmp_path, monkeypatch, capsys):
    cfg = Config().replace(**SMALL)
    torch.manual_seed(0)
    export_dir = export_model(build_segmenter(cfg), cfg, tmp_path / "export", codebook=CodebookRequest(k=3, windows=4))
    client = MlflowClient(tracking_uri=use_mlflow_server.url)
    run = _register(client, export_dir, "champ-model", "champion-test")

    work = tmp_path / "work"
    path, why = find_champion(work, "champ-model")
    assert path == work / "champion" / "champ-model-v1"
    assert "champion champ-model v1" in why
    assert run in why
    assert sorted(p.name for p in path.iterdir()) == sorted(p.name for p in export_dir.iterdir())
    assert read_meta(path)["codebook"] == read_meta(export_dir)["codebook"]
    assert load_export(path).embed_dim == 8

    scene = generate_scene(96, 3)
    write_scene_geotiff(scene, tmp_path / "img.tif", tmp_path / "lab.tif", origin=(500000.0, 5000000.0),
                        pixel_size=0.5)
    monkeypatch.chdir(tmp_path)
    assert cli_main(["predict", "img.tif", "out.tif", "--work-dir", "work", "--model-name", "champ-model",
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "using export work/champion/champ-model-v1: the champion champ-model v1 from the registry" in out
    assert "codebook classes k=3" in out
