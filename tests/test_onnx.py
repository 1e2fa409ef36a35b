"""model.onnx: metadata round trip, dynamic sizes, onnxruntime agrees with the numpy runtime."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from segcore.codebook import CodebookRequest, load_codebook
from segcore.config import Config
from segcore.data.synthetic import generate_scene
from segcore.export import export_model
from segcore.models import build_segmenter
from segcore.runtime import STRIDE, coordinate_taps, load_export, read_meta

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'segcore[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'segcore[onnx]')")

SMALL = {"student.width": 16, "student.groups": 4, "student.embed_dim": 16, "model.embed_dim": 16,
         "model.temperature": 0.1, "data.gsd": 0.5}
NAMES = ("field", "meadow", "forest", "water", "road", "building")


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    cfg = Config().replace(**SMALL)
    torch.manual_seed(0)
    req = CodebookRequest(k=6, windows=8, class_names=NAMES)
    return export_model(build_segmenter(cfg), cfg, tmp_path_factory.mktemp("onnx") / "export", codebook=req,
                        onnx=True)


def numpy_probabilities(model, codebook, image: np.ndarray) -> np.ndarray:
    """Codebook-mode probabilities ``(K, H, W)`` of the numpy runtime, upsampled x4 like its labels."""
    h, w = image.shape[:2]
    probs = model.probabilities(model.embed(image, codebook.stats), codebook.prototypes)
    r0, r1, rl = coordinate_taps(probs.shape[1], (np.arange(h) + 0.5) / STRIDE - 0.5)
    c0, c1, cl = coordinate_taps(probs.shape[2], (np.arange(w) + 0.5) / STRIDE - 0.5)
    pw = probs[:, :, c0] * (1.0 - cl) + probs[:, :, c1] * cl
    return pw[:, r0] * (1.0 - rl)[None, :, None] + pw[:, r1] * rl[None, :, None]


def test_metadata_round_trips(onnx_export):
    proto = onnx.load(onnx_export / "model.onnx")
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["model_type"] == "Segmentor"
    assert json.loads(props["class_names"]) == {str(i): n for i, n in enumerate(NAMES)}
    assert float(props["resolution"]) == pytest.approx(50.0)  # data.gsd 0.5 m -> 50 cm per pixel
    assert int(props["tiles_size"]) == 512
    assert 0 <= int(props["tiles_overlap"]) < 100
    assert json.loads(props["standardization_mean"]) == [0.0, 0.0, 0.0]
    assert json.loads(props["standardization_std"]) == [1.0, 1.0, 1.0]
    norm = json.loads(props["normalisation"])
    assert norm["inside_graph"] is True
    assert norm["mean"] == pytest.approx([0.485, 0.456, 0.406])
    meta = read_meta(onnx_export)
    assert meta["onnx"]["file"] == "model.onnx"
    assert sorted(props) == meta["onnx"]["metadata"]
    assert json.loads(props["codebook"])["k"] == meta["codebook"]["k"] == 6
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("image", "probabilities")
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims[1] == 3
    assert all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))  # batch, H, W dynamic


@pytest.mark.parametrize("shape", [(256, 256), (203, 317), (97, 130)])
def test_onnxruntime_matches_the_numpy_runtime(onnx_export, shape):
    model, codebook = load_export(onnx_export), load_codebook(onnx_export, read_meta(onnx_export))
    sess = ort.InferenceSession(str(onnx_export / "model.onnx"), providers=["CPUExecutionProvider"])
    images = [generate_scene(shape, seed).image for seed in (7, 8)]
    batch = np.stack([(im.astype(np.float32) / 255.0).transpose(2, 0, 1) for im in images])  # (2, 3, H, W)
    (probs,) = sess.run(None, {"image": batch})
    assert probs.shape == (2, 6, *shape)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    for image, p in zip(images, probs, strict=True):
        expected = numpy_probabilities(model, codebook, image)
        np.testing.assert_allclose(p, expected, atol=1e-4)
        labels = model.assign(model.embed(image, codebook.stats), codebook.prototypes, shape)[1]
        differ = p.argmax(0) != labels
        # Only ties at exact boundaries may differ: the top two probabilities there are within 1e-4.
        top2 = np.sort(expected, axis=0)[-2:]
        assert (top2[1] - top2[0])[differ].max(initial=0.0) < 1e-4
        assert differ.mean() < 1e-3


def test_onnx_export_needs_the_extra(monkeypatch):
    from segcore.onnx_export import OnnxMissingError, require_onnx

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed: import raises ImportError
    with pytest.raises(OnnxMissingError, match=r"pip install 'segcore\[onnx\]'"):
        require_onnx()


def test_onnx_without_codebook_is_refused(tmp_path):
    cfg = Config().replace(**SMALL)
    with pytest.raises(ValueError, match="needs a codebook"):
        export_model(build_segmenter(cfg), cfg, tmp_path / "e", onnx=True)
