"""Evaluation: hand-computed aggregation over images, report files, protocol downsampling, CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from segcore.config import Config
from segcore.eval import main as eval_main
from segcore.evaluate import EvalData, EvalImage, downsample_stride, evaluate, raster_data, synthetic_data
from segcore.metrics import matched_confusion
from segcore.overlays import GAP, PALETTE, UNMATCHED, matched_classes


class FixedPredictor:
    """Returns pre-set segment maps (whatever k is asked), keyed by image shape."""

    name = "fixed"
    max_k = 16

    def __init__(self, preds: dict[tuple[int, int], np.ndarray]):
        self.preds = preds

    def segment(self, image, k, valid):
        if image.shape[:2] in self.preds:
            return self.preds[image.shape[:2]]
        return np.zeros(image.shape[:2], np.int64)


def _hand_data():
    # Image 1 (2 x 5): the last column is ignored (target 0) and holds a segment of its own (9).
    t1 = np.array([[1, 1, 2, 2, 0], [1, 1, 2, 2, 0]])
    p1 = np.array([[5, 5, 5, 7, 9], [5, 5, 7, 7, 9]])
    # Image 2 (2 x 2): all class 1, split into two segments; the 1-px one is matched to class 2.
    t2 = np.array([[1, 1], [1, 1]])
    p2 = np.array([[0, 0], [0, 3]])
    items = [EvalImage("one", np.zeros((2, 5, 3), np.uint8), t1, np.ones((2, 5), bool)),
             EvalImage("two", np.zeros((2, 2, 3), np.uint8), t2, np.ones((2, 2), bool))]
    return EvalData("hand", 2, lambda: iter(items)), FixedPredictor({(2, 5): p1, (2, 2): p2})


def test_hand_computed_aggregation(tmp_path):
    data, predictor = _hand_data()
    cfg = Config().replace(**{"eval.speckle_px": 1, "eval.k": 3})  # image 1 has 3 segments
    m = evaluate(predictor, data, cfg, tmp_path)
    # Summed matched confusion: class 1 TP 4+3, predicted-1 = 5+3, actual-1 = 4+4 -> 7/9;
    # class 2 TP 3, predicted-2 = 3+1, actual-2 = 4 -> 3/5. Pixel accuracy 10/12.
    assert m["val/iou/1"] == pytest.approx(7 / 9)
    assert m["val/iou/2"] == pytest.approx(3 / 5)
    assert m["val/miou"] == pytest.approx((7 / 9 + 3 / 5) / 2)
    assert m["val/pixel_acc"] == pytest.approx(10 / 12)
    # Majority (many-to-one): image 2's two segments both go to class 1 -> 8/9 and 3/4, accuracy 11/12.
    assert m["val/majority/iou/1"] == pytest.approx(8 / 9)
    assert m["val/majority/iou/2"] == pytest.approx(3 / 4)
    assert m["val/majority/miou"] == pytest.approx((8 / 9 + 3 / 4) / 2)
    assert m["val/majority/pixel_acc"] == pytest.approx(11 / 12)
    assert m["val/k"] == 3
    assert m["val/majority_k"] == 16
    assert m["val/images"] == 2
    table = pd.read_csv(tmp_path / "per_image.csv")
    assert list(table["image"]) == ["one", "two"]
    # Per image: image 1 IoUs 4/5 and 3/4; image 2 has class 1 only: 3/4 (class 2 absent, not averaged).
    assert table["miou"].tolist() == pytest.approx([(4 / 5 + 3 / 4) / 2, 3 / 4])
    assert table["pixel_acc"].tolist() == pytest.approx([7 / 8, 3 / 4])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == pytest.approx(m)


def test_overlay_colours_follow_the_matching(tmp_path):
    data, predictor = _hand_data()
    evaluate(predictor, data, Config().replace(**{"eval.k": 3}), tmp_path)
    png = np.asarray(Image.open(tmp_path / "overlays" / "one.png").convert("RGB"))
    assert png.shape == (2, 3 * 5 + 2 * GAP, 3)
    pred_panel, label_panel = png[:, 5 + GAP : 10 + GAP], png[:, 10 + 2 * GAP :]
    assert (pred_panel[0, 0] == PALETTE[0]).all()  # segment 5 -> class 1
    assert (pred_panel[1, 2] == PALETTE[1]).all()  # segment 7 -> class 2
    assert (pred_panel[0, 4] == UNMATCHED).all()  # segment 9 lies only on ignored pixels
    assert (label_panel[0, 0] == PALETTE[0]).all()
    assert (label_panel[0, 4] == 0).all()  # ignore is black


def test_overlay_matching_equals_metrics_matching():
    rng = np.random.default_rng(0)
    for _ in range(20):
        target = rng.integers(0, 5, (30, 30))
        pred = rng.integers(0, 7, (30, 30)) * 3
        mapping = matched_classes(pred, target, 4)
        n = 5
        conf = np.zeros((n, n), np.int64)
        keep = target > 0
        np.add.at(conf, (np.array([mapping.get(int(s), 0) for s in pred[keep]]), target[keep]), 1)
        assert np.array_equal(conf, matched_confusion(pred, target, 4))


def test_two_view_consistency_of_an_equivariant_predictor(tmp_path):
    class Threshold:
        name, max_k = "threshold", 4

        def segment(self, image, k, valid):
            return (image[..., 0] > 120).astype(np.int64) + 2 * (image[..., 1] > 120)

    m = evaluate(Threshold(), synthetic_data(3, count=1, size=64), Config().replace(**{"eval.k": 4}), tmp_path)
    assert m["proxy/two_view_consistency"] == 1.0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from segcore.export import export_checkpoint
    from segcore.train import fit

    cfg = Config().replace(**{"train.steps": 3, "data.patch_sizes": (64,), "data.synthetic_size": 128,
                              "data.synthetic_count": 2, "train.batch_size": 2, "model.temperature": 0.1})
    root = tmp_path_factory.mktemp("tiny")
    ckpt = fit(cfg, root / "run", progress=False).checkpoint
    return ckpt, export_checkpoint(ckpt, root / "export")


def test_evaluate_tiny_synthetic_run(tiny_run, tmp_path):
    ckpt, export_dir = tiny_run
    cfg = Config().replace(**{"eval.num_overlays": 2})
    data = synthetic_data(7, count=3, size=96)
    m = evaluate(str(ckpt), data, cfg, tmp_path / "torch")
    for key in ("val/miou", "val/pixel_acc", "val/majority/miou", "proxy/utilization", "proxy/speckle",
                "proxy/boundary_density", "proxy/two_view_consistency"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["val/pixel_acc"] > 0.2  # six classes, matched: better than nothing
    assert m["val/majority/pixel_acc"] >= m["val/pixel_acc"] - 1e-9 or m["val/majority_k"] != m["val/k"]
    assert sorted(p.name for p in (tmp_path / "torch" / "overlays").iterdir()) == [
        "synthetic-7-000.png", "synthetic-7-001.png"]
    png = Image.open(tmp_path / "torch" / "overlays" / "synthetic-7-000.png")
    assert png.size == (3 * 96 + 2 * GAP, 96)
    table = pd.read_csv(tmp_path / "torch" / "per_image.csv")
    assert len(table) == 3
    assert table["miou"].between(0, 1).all()
    assert "mIoU (Hungarian one-to-one, k=6)" in (tmp_path / "torch" / "summary.md").read_text()
    # The numpy runtime's per-image clusters of the export score the same (labels agree on >= 99.9% of pixels).
    from segcore.runtime import load_export

    m_np = evaluate(load_export(export_dir), data, cfg, tmp_path / "numpy")
    assert m_np["val/miou"] == pytest.approx(m["val/miou"], abs=0.01)


def test_an_export_is_scored_as_segcore_predict_labels_it(tiny_run, tmp_path):
    # An export directory is scored through its codebook, class prior and region vote (the
    # export's own predict settings) at each image's ground resolution, and its ids once per split.
    from segcore.codebook import load_codebook
    from segcore.metrics import MatchedIoU, PooledIoU
    from segcore.predict import export_config, segment_image
    from segcore.runtime import load_export

    _, export_dir = tiny_run
    model = load_export(export_dir)
    codebook = load_codebook(export_dir, model.meta)
    p = export_config(model.meta).predict
    assert codebook is not None
    assert p.region_m > 0
    assert p.prior_rounds > 0
    scenes = synthetic_data(7, count=3, size=96)
    assert {item.gsd for item in scenes.images()} == {2.0}  # the synthetic scenes' metres per pixel
    # At 20 m per pixel the 300 m regions are 3.75 cells, under the cap of a quarter of the image
    # (6 cells): the vote depends on the gsd the scorer passes.
    data = EvalData(scenes.name, 6, lambda: (dataclasses.replace(item, gsd=20.0) for item in scenes.images()))
    cfg = Config().replace(**{"eval.num_overlays": 1})
    m = evaluate(str(export_dir), data, cfg, tmp_path / "export")
    per_image, pooled = MatchedIoU(6), PooledIoU(codebook.k, 6)
    for item in data.images():
        ids = segment_image(model, item.image, item.valid, codebook=codebook, class_names=model.meta["class_names"],
                            gsd=item.gsd, region_m=p.region_m, region_compactness=p.region_compactness,
                            prior_rounds=p.prior_rounds)
        per_image.update(ids, item.target)
        pooled.update(ids, item.target)
    assert m["val/miou"] == pytest.approx(per_image.compute()["miou"])
    assert m["val/pixel_acc"] == pytest.approx(per_image.compute()["pixel_acc"])
    assert m["val/dataset/miou"] == pytest.approx(pooled.compute()["miou"])
    assert m["val/k"] == codebook.k  # the codebook's ids, whatever eval.k asks
    assert "one matching for the whole split" in (tmp_path / "export" / "summary.md").read_text()
    # The bare network's per-image clusters are another score, with no legend to match once.
    bare = evaluate(model, data, cfg, tmp_path / "bare")
    assert "val/dataset/miou" not in bare
    assert bare["val/miou"] != pytest.approx(m["val/miou"], abs=1e-6)


def test_synthetic_seeds_and_protocol_stride():
    from segcore.data.synthetic import generate_scene, scene_seed

    data = synthetic_data(7, count=2, size=200, max_side=64)
    items = list(data.images())
    assert [i.name for i in items] == ["synthetic-7-000", "synthetic-7-001"]
    assert downsample_stride(200, 200, 64) == 4
    scene = generate_scene(200, scene_seed(7, 1))
    assert np.array_equal(items[1].image, scene.image[::4, ::4])
    assert items[1].image.shape == (50, 50, 3)
    assert downsample_stride(2448, 2448, 512) == 5


def test_raster_data_reads_every_sth_pixel(tmp_path):
    from segcore.data.synthetic import generate_scene, scene_seed, write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "ds", count=2, size=130, seed=4, nodata_border=3)
    data = raster_data(root / "manifest.csv", max_side=50)
    assert data.num_classes == 6  # from classes.csv
    items = list(data.images())
    scene = generate_scene(130, scene_seed(4, 0))
    s = 3  # ceil(130 / 50)
    assert items[0].stride == s
    assert items[0].image.shape == (44, 44, 3)
    inner = slice(1, -1)  # every 3rd pixel: rows 0 and 129 lie in the nodata border
    assert np.array_equal(items[0].image[inner, inner], scene.image[::s, ::s][inner, inner])
    assert np.array_equal(items[0].target[inner, inner], scene.labels[::s, ::s][inner, inner])
    assert not items[0].valid[0].any()
    assert (items[0].target[~items[0].valid] == 0).all()
    same = raster_data(root, max_side=50)  # the directory form
    assert [i.name for i in same.images()] == ["scene-000", "scene-001"]
    kept = next(raster_data(root, max_side=50, keep_full=True).images())
    image, valid = kept.full  # the working grid before the protocol's stride
    assert image.shape == (130, 130, 3)
    assert np.array_equal(image[inner.start * s : -s : s, inner.start * s : -s : s], items[0].image[inner, inner])
    assert np.array_equal(image[::s, ::s], kept.image)
    assert np.array_equal(valid[::s, ::s], kept.valid)
    assert not valid[:3].any()
    assert valid[3:-3, 3:-3].all()
    assert items[0].full is None  # kept only when asked


def test_cli_requires_a_model(tmp_path, capsys):
    assert eval_main(["--synthetic", "--seed", "7", "--out", str(tmp_path)]) == 2
    assert "choose exactly one model" in capsys.readouterr().err
    assert eval_main(["--synthetic", "--seed", "7000003", "--baseline", "kmeans", "--out", str(tmp_path)]) == 2


def test_cli_kmeans_baseline(tmp_path, capsys):
    rc = eval_main(["--synthetic", "--seed", "7", "--baseline", "kmeans", "--out", str(tmp_path),
                    "eval.synthetic_count=2", "eval.synthetic_size=64"])
    assert rc == 0
    assert "kmeans-rgb" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 < metrics["val/miou"] <= 1
    assert len(list((tmp_path / "overlays").iterdir())) == 2


def test_constant_baseline_by_hand(tmp_path):
    # A: 3 px of class 1, 1 of class 2; B the reverse. One label per image, matched per image:
    # conf[1] = (3, 1), conf[2] = (1, 3) -> IoU 3/5 each, accuracy 6/8. One matching for both
    # images: the one id covers 4 + 4 px and goes to one class: IoU 4/8 and 0, accuracy 4/8.
    items = [EvalImage("a", np.zeros((1, 4, 3), np.uint8), np.array([[1, 1, 1, 2]]), np.ones((1, 4), bool)),
             EvalImage("b", np.zeros((1, 4, 3), np.uint8), np.array([[2, 2, 2, 1]]), np.ones((1, 4), bool))]
    m = evaluate("constant", EvalData("two", 2, lambda: iter(items)), Config().replace(**{"eval.num_overlays": 0}),
                 tmp_path)
    assert m["val/miou"] == pytest.approx(3 / 5)
    assert m["val/pixel_acc"] == pytest.approx(6 / 8)
    assert m["val/dataset/miou"] == pytest.approx(0.25)
    assert m["val/dataset/pixel_acc"] == pytest.approx(0.5)
    assert m["val/k"] == 1


def test_unlabelled_data_reports_proxies_only(tmp_path):
    from segcore.data.synthetic import generate_scene

    scene = generate_scene(64, seed=2)

    def images():
        yield EvalImage("unlabelled", scene.image, np.zeros((64, 64), np.int64), np.ones((64, 64), bool))

    metrics = evaluate("kmeans", EvalData("unlabelled", 6, images), Config(), tmp_path)
    assert not any(key.startswith(("val/miou", "val/pixel_acc", "val/majority/")) for key in metrics)
    assert 0.0 <= metrics["proxy/utilization"] <= 1.0
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert "no labels" in (tmp_path / "summary.md").read_text()


def test_cli_scores_an_export_on_rasters_as_predict_reads_them(tiny_run, tmp_path, capsys):
    from segcore.data.synthetic import write_synthetic_dataset

    _, export_dir = tiny_run
    root = write_synthetic_dataset(tmp_path / "ds", count=2, size=96, seed=4)
    rc = eval_main(["--export", str(export_dir), "--data", str(root / "manifest.csv"), "--out", str(tmp_path / "r"),
                    "eval.num_overlays=1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "one matching for the whole split" in out
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert 0.0 <= metrics["val/dataset/miou"] <= 1.0
    assert metrics["val/images"] == 2
    # Overrides reach the scoring as they reach segcore predict: without the vote and the prior
    # the maps, and so the proxies, change.
    assert eval_main(["--export", str(export_dir), "--data", str(root / "manifest.csv"), "--out", str(tmp_path / "p"),
                      "predict.region_m=0", "predict.prior_rounds=0"]) == 0
    plain = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert plain["proxy/boundary_density"] > metrics["proxy/boundary_density"]


def test_an_export_segments_the_working_grid_and_is_scored_on_every_sth_pixel(tiny_run, tmp_path, caplog):
    from segcore.evaluate import ExportPredictor, _predict
    from segcore.metrics import MatchedIoU

    _, export_dir = tiny_run
    predictor = ExportPredictor(export_dir)
    kept = synthetic_data(7, count=1, size=96, max_side=48, keep_full=True)  # every 2nd pixel scored
    item = next(kept.images())
    image, valid = item.full
    assert image.shape[:2] == (96, 96)
    assert item.image.shape[:2] == (48, 48)
    # As segcore predict maps the image at its own ground resolution, then every 2nd pixel.
    expected = predictor.segment(image, 6, valid, gsd=item.gsd / 2)[::2, ::2]
    np.testing.assert_array_equal(_predict(predictor, item, 6), expected)
    coarse = predictor.segment(item.image, 6, item.valid, gsd=item.gsd)
    assert (coarse != expected).any()  # the strided input is a different map
    with caplog.at_level("WARNING", logger="segcore.evaluate"):
        metrics = evaluate(predictor, kept, Config().replace(**{"eval.num_overlays": 0}), tmp_path / "a")
    assert "working resolution" not in caplog.text  # nothing to warn about
    by_hand = MatchedIoU(6)
    by_hand.update(expected, item.target)
    assert metrics["val/miou"] == pytest.approx(by_hand.compute()["miou"])


def test_an_export_scored_on_coarser_pixels_than_it_works_at_is_warned_about(tiny_run, tmp_path, caplog):
    _, export_dir = tiny_run
    coarse = synthetic_data(7, count=1, size=96, max_side=48)  # every 2nd pixel
    with caplog.at_level("WARNING", logger="segcore.evaluate"):
        evaluate(str(export_dir), coarse, Config().replace(**{"eval.num_overlays": 0}), tmp_path / "a")
    assert "downsampled 2x before the model sees it" in caplog.text
    assert "eval.max_side=96 (or keep_full=True" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="segcore.evaluate"):
        evaluate(str(export_dir), synthetic_data(7, count=1, size=96), Config().replace(**{"eval.num_overlays": 0}),
                 tmp_path / "b")
    assert "working resolution" not in caplog.text
