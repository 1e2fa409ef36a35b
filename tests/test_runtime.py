"""Numpy runtime: op-level and end-to-end parity with the torch model, no-torch import, bad artifacts."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segcore.config import Config
from segcore.data.synthetic import generate_scene
from segcore.errors import ArtifactError
from segcore.export import export_checkpoint, export_model
from segcore.models import build_segmenter
from segcore.models.segmenter import upsample_labels
from segcore.models.smoothing import FastSmoothing
from segcore.runtime import conv2d, im2col_weight, load_export, smooth, upsample_argmax

REPO_ROOT = Path(__file__).resolve().parents[1]

SIZES = ((64, 64), (96, 131), (256, 256))
# At random init (and after only a few steps) the default temperature 0.8 leaves the cluster
# probabilities uniform to float precision, so argmax is decided by rounding noise (measured: 82-96%
# label agreement although embeddings agree to 3e-7). A sharper temperature makes labels well defined.
SHARP = {"model.temperature": 0.1}


def _torch_run(model, image: np.ndarray, k: int) -> dict[str, torch.Tensor]:
    x = torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 255.0)[None]
    with torch.no_grad():
        return model.eval()(x, k=k)


def _calibrate_batchnorm(model) -> None:
    """Give BatchNorm layers data-derived running statistics and non-trivial affine parameters
    (with the initial mean 0 / var 1 the random embeddings collapse and labels become ties)."""
    g = torch.Generator().manual_seed(3)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if not norms:
        return
    for mod in norms:
        mod.momentum = None  # cumulative average
        mod.reset_running_stats()
        mod.weight.data.copy_(0.8 + 0.4 * torch.rand(mod.num_features, generator=g))
        mod.bias.data.copy_(0.1 * torch.randn(mod.num_features, generator=g))
    images = np.stack([generate_scene(96, seed=s).image for s in (21, 22)]).transpose(0, 3, 1, 2)
    with torch.no_grad():
        model.train().student(torch.from_numpy(images.astype(np.float32) / 255.0))
    model.eval()


def assert_parity(model, exported, sizes=SIZES, k=6) -> None:
    for h, w in sizes:
        image = generate_scene((h, w), seed=h * 1000 + w).image
        ref = _torch_run(model, image, k)
        z = exported.embed(image)
        assert z.shape == tuple(ref["embed"].shape[1:])
        assert np.abs(z - ref["embed"][0].numpy()).max() <= 1e-4
        labels = exported.segment(image, k)
        assert labels.shape == (h, w)
        agree = (labels == ref["labels"][0].numpy()).mean()
        assert agree >= 0.999, f"{h}x{w}: labels agree on {agree:.5f}"


@pytest.mark.parametrize(
    "overrides",
    [{}, {"student.norm": "batch"}, {"model.refiner": True, "model.embed_dim": 64, "student.depth": 2},
     {"student.dilations": (1, 2, 4)}],
    ids=["groupnorm", "batchnorm-folded", "refiner+proj", "dilated-1-2-4"],
)
def test_parity_random_weights(tmp_path, overrides):
    cfg = Config().replace(**SHARP, **overrides)
    torch.manual_seed(0)
    model = build_segmenter(cfg)
    _calibrate_batchnorm(model)
    exported = load_export(export_model(model, cfg, tmp_path / "export"))
    assert_parity(model, exported)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from segcore.train import fit

    cfg = Config().replace(**{"train.steps": 3, "data.patch_sizes": (64,), "data.synthetic_size": 128,
                              "data.synthetic_count": 2, "train.batch_size": 2, **SHARP})
    root = tmp_path_factory.mktemp("trained")
    result = fit(cfg, root / "run", progress=False)
    return result.checkpoint, export_checkpoint(result.checkpoint, root / "export")


def test_parity_trained_checkpoint(trained):
    from segcore.checkpoint import load_checkpoint

    ckpt, export_dir = trained
    state = load_checkpoint(ckpt)
    model = build_segmenter(Config.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    assert_parity(model, load_export(export_dir))


@pytest.mark.parametrize(("stride", "kernel", "h", "w", "dilation"),
                         [(1, 3, 7, 9, 1), (2, 3, 11, 8, 1), (2, 3, 16, 16, 1), (1, 1, 5, 6, 1), (1, 3, 7, 9, 2),
                          (1, 3, 13, 10, 4), (1, 3, 3, 5, 4)])
def test_conv2d_matches_torch(stride, kernel, h, w, dilation):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 5, h, w, generator=g)
    conv = torch.nn.Conv2d(5, 7, kernel, stride=stride, padding=dilation * (kernel // 2), dilation=dilation)
    ref = conv(x)[0].detach().numpy().transpose(1, 2, 0)
    got = conv2d(np.ascontiguousarray(x[0].numpy().transpose(1, 2, 0)), im2col_weight(conv.weight.detach().numpy()),
                 conv.bias.detach().numpy(), stride, dilation)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_smoothing_and_upsampling_match_torch():
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(3 * torch.randn(1, 5, 9, 13, generator=g), dim=1)
    np.testing.assert_allclose(smooth(probs[0].numpy(), 2, 0.5), FastSmoothing(2, 0.5)(probs)[0].numpy(), atol=1e-6)
    for out_h, out_w in ((36, 52), (33, 50)):
        ref = upsample_labels(probs, out_h, out_w)[0].numpy()
        assert np.array_equal(upsample_argmax(probs[0].numpy(), out_h, out_w), ref)
    up = F.interpolate(probs, scale_factor=4, mode="bilinear", align_corners=False)
    assert up.shape[-2:] == (36, 52)


def test_fit_prototypes_matches_torch_head(tmp_path):
    cfg = Config().replace(**SHARP)
    torch.manual_seed(0)
    model = build_segmenter(cfg)
    exported = load_export(export_model(model, cfg, tmp_path / "export"))
    image = generate_scene((80, 120), seed=5).image
    ref = _torch_run(model, image, 5)
    protos = exported.fit_prototypes(exported.embed(image), 5)
    np.testing.assert_allclose(protos, ref["prototypes"][0].numpy(), atol=1e-5)
    probs, labels = exported.assign(exported.embed(image), protos, (80, 120))
    assert np.array_equal(labels, ref["labels"][0].numpy())
    np.testing.assert_allclose(probs, ref["probs"][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="max_k"):
        exported.fit_prototypes(exported.embed(image), cfg.model.max_k + 1)


NO_TORCH = """
import sys
import numpy as np
import segcore.runtime, segcore.predict
model = segcore.runtime.load_export(sys.argv[1])
labels = model.segment(np.full((40, 52, 3), 90, np.uint8) + np.arange(52, dtype=np.uint8)[None, :, None], 3)
res = segcore.predict.predict_raster(sys.argv[2], sys.argv[3], model, 3, tile=64, progress=False)
print(labels.shape, res.tiles, "torch" in sys.modules)
"""


def test_runtime_and_predict_never_import_torch(tmp_path):
    from segcore.data.synthetic import write_scene_geotiff

    cfg = Config().replace(**{"student.width": 8, "student.groups": 4, "student.embed_dim": 8, "model.embed_dim": 8})
    torch.manual_seed(0)
    export_model(build_segmenter(cfg), cfg, tmp_path / "export")
    write_scene_geotiff(generate_scene(100, 1), tmp_path / "img.tif", tmp_path / "lab.tif",
                        origin=(500000.0, 5000000.0), pixel_size=0.5)
    out = subprocess.run([sys.executable, "-c", NO_TORCH, str(tmp_path / "export"), str(tmp_path / "img.tif"),
                          str(tmp_path / "out.tif")], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[-2] == "(40, 52) 4 False"


# -- bad artifacts ----------------------------------------------------------------------------------
@pytest.fixture
def small_export(tmp_path):
    cfg = Config().replace(**{"student.width": 8, "student.groups": 4, "student.embed_dim": 8, "model.embed_dim": 8})
    torch.manual_seed(0)
    return export_model(build_segmenter(cfg), cfg, tmp_path / "export")


@pytest.mark.parametrize("name", ["model.npz", "meta.json", "metrics.json"])
def test_missing_file(small_export, name):
    (small_export / name).unlink()
    with pytest.raises(ArtifactError, match=f"{name} is missing"):
        load_export(small_export)


def test_missing_directory(tmp_path):
    with pytest.raises(ArtifactError, match="is missing"):
        load_export(tmp_path / "nowhere")


def test_truncated_npz(small_export):
    data = (small_export / "model.npz").read_bytes()
    (small_export / "model.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"model\.npz is unreadable or truncated"):
        load_export(small_export)


def test_truncated_meta(small_export):
    text = (small_export / "meta.json").read_text()
    (small_export / "meta.json").write_text(text[:40])
    with pytest.raises(ArtifactError, match=r"meta\.json is unreadable"):
        load_export(small_export)


def test_wrong_format_version(small_export):
    meta = json.loads((small_export / "meta.json").read_text())
    meta["format_version"] = 99
    (small_export / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="format version 99"):
        load_export(small_export)


def _rewrite_npz(path, change) -> None:
    with np.load(path / "model.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    np.savez(path / "model.npz", **arrays)


def test_missing_array(small_export):
    _rewrite_npz(small_export, lambda a: a.pop("student.stem2.conv.weight"))
    with pytest.raises(ArtifactError, match=r"lacks array 'student\.stem2\.conv\.weight'"):
        load_export(small_export)


def test_wrong_shape(small_export):
    _rewrite_npz(small_export, lambda a: a.update({"student.stem2.conv.bias": np.zeros(3, np.float32)}))
    with pytest.raises(ArtifactError, match=r"'student\.stem2\.conv\.bias' is float32\[3\], expected float32\[8\]"):
        load_export(small_export)


def test_wrong_dtype(small_export):
    _rewrite_npz(small_export, lambda a: a.update({"student.mean": a["student.mean"].astype(np.float64)}))
    with pytest.raises(ArtifactError, match=r"'student\.mean' is float64"):
        load_export(small_export)


def test_pickled_npz_is_refused(small_export):
    with zipfile.ZipFile(small_export / "model.npz", "a") as zf, zf.open("evil.npy", "w") as fh:
        np.lib.format.write_array(fh, np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(ArtifactError, match="unreadable"):
        load_export(small_export)
