"""Export: contents and schema, BatchNorm folding, atomic replacement, CLI, round trip to the runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segcore.cli.main import main as cli_main
from segcore.config import Config
from segcore.data.synthetic import generate_scene
from segcore.errors import ArtifactError
from segcore.export import export_checkpoint, export_model
from segcore.models import build_segmenter
from segcore.runtime import FORMAT_VERSION, expected_arrays, load_export


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from segcore.train import fit

    cfg = Config().replace(**{"train.steps": 3, "data.patch_sizes": (64,), "data.synthetic_size": 128,
                              "data.synthetic_count": 2, "train.batch_size": 2, "model.temperature": 0.1})
    return fit(cfg, tmp_path_factory.mktemp("run"), progress=False).checkpoint


def test_export_contents(checkpoint, tmp_path):
    out = export_checkpoint(checkpoint, tmp_path / "export", run_id="run-123", eval_metrics={"val/miou": 0.5})
    # The dataset codebook is fitted by default (segcore.codebook; export_checkpoint(codebook=None) skips it).
    assert sorted(p.name for p in out.iterdir()) == ["codebook.npz", "meta.json", "metrics.json", "model.npz"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["codebook"]["k"] == 8
    cfg = Config()
    assert meta["format_version"] == FORMAT_VERSION
    assert (meta["max_k"], meta["embed_dim"], meta["stride"]) == (cfg.model.max_k, cfg.model.embed_dim, 4)
    assert meta["temperature"] == pytest.approx(0.1)
    assert meta["cluster_iters"] == cfg.distill.cluster_iters
    assert meta["smoothing"] == {"enabled": True, "iters": 2, "alpha": 0.5}
    assert meta["norm"]["type"] == "group"
    assert meta["norm"]["groups"] == 8
    assert meta["input"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert meta["input"]["scale"] == pytest.approx(1 / 255)
    assert [layer["name"] for layer in meta["layers"]] == [
        "student.stem1", "student.stem2", "student.blocks.0", "student.blocks.1", "student.blocks.2", "student.out"]
    assert meta["source_run_id"] == "run-123"
    assert meta["config_hash"] == Config.from_dict(meta["config"]).hash()
    with np.load(out / "model.npz", allow_pickle=False) as npz:
        names = set(npz.files)
        assert all(npz[n].dtype == np.float32 for n in names)
        shapes = {n: list(npz[n].shape) for n in names}
    # Only the inference path: no decoder, teacher, loss state or BatchNorm counters.
    assert names == set(expected_arrays(meta)) == set(meta["arrays"])
    assert shapes == meta["arrays"]
    assert not any(n.startswith(("decoder", "loss", "teacher", "head")) for n in names)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 3
    assert metrics["val/miou"] == 0.5
    assert metrics["best_step"] in (1, 2, 3)
    assert np.isfinite(metrics["best_loss"])


def test_round_trip_matches_torch(checkpoint, tmp_path):
    from segcore.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    model = build_segmenter(Config.from_dict(state["config"])).eval()
    model.load_state_dict(state["model"])
    exported = load_export(export_checkpoint(checkpoint, tmp_path / "export"))
    image = generate_scene((72, 100), seed=9).image
    with torch.no_grad():
        ref = model(torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 255.0)[None], k=6)
    assert np.abs(exported.embed(image) - ref["embed"][0].numpy()).max() <= 1e-4
    assert (exported.segment(image, 6) == ref["labels"][0].numpy()).mean() >= 0.999


def test_batchnorm_is_folded(tmp_path):
    cfg = Config().replace(**{"student.norm": "batch", "student.width": 8, "student.embed_dim": 8,
                              "model.embed_dim": 8})
    torch.manual_seed(0)
    model = build_segmenter(cfg)
    bn = model.student.stem1.norm
    bn.running_mean.fill_(0.3)
    bn.running_var.fill_(4.0)
    out = export_model(model, cfg, tmp_path / "export")
    with np.load(out / "model.npz") as npz:
        assert "student.stem1.norm.weight" not in npz.files
        weight, bias = npz["student.stem1.conv.weight"], npz["student.stem1.conv.bias"]
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    np.testing.assert_allclose(weight, model.student.stem1.conv.weight.detach().numpy() * scale[:, None, None, None],
                               rtol=1e-6)
    expect = (model.student.stem1.conv.bias.detach().numpy() - 0.3) * scale + bn.bias.detach().numpy()
    np.testing.assert_allclose(bias, expect, rtol=1e-6, atol=1e-7)
    assert json.loads((out / "meta.json").read_text())["norm"]["batchnorm_folded"] is True


def test_reexport_replaces_atomically(tmp_path):
    cfg = Config().replace(**{"student.width": 8, "student.groups": 4, "student.embed_dim": 8, "model.embed_dim": 8})
    torch.manual_seed(0)
    export_model(build_segmenter(cfg), cfg, tmp_path / "export", metrics={"tag": 1})
    torch.manual_seed(1)
    export_model(build_segmenter(cfg), cfg, tmp_path / "export", metrics={"tag": 2})
    assert json.loads((tmp_path / "export" / "metrics.json").read_text()) == {"tag": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temp or backup dirs left


def test_cli_export(checkpoint, tmp_path, capsys):
    (tmp_path / "eval.json").write_text(json.dumps({"val/miou": 0.25}))
    rc = cli_main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "exp"),
                   "--run-id", "abc", "--metrics", str(tmp_path / "eval.json")])
    assert rc == 0
    assert json.loads((tmp_path / "exp" / "metrics.json").read_text())["val/miou"] == 0.25
    assert load_export(tmp_path / "exp").max_k == 16


def test_unreadable_checkpoint(tmp_path, capsys):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ArtifactError, match=r"bad\.pt"):
        export_checkpoint(tmp_path / "bad.pt", tmp_path / "exp")
    assert cli_main(["export", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "e")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "exp").exists()
