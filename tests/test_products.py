"""segcore predict to map products: codebook ids agree across rasters, style, mosaic, polygons, champion."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
import torch
from affine import Affine
from rasterio import features

from segcore.champion import find_champion, newest_export, predict_command
from segcore.cli.main import main as cli_main
from segcore.codebook import CodebookRequest
from segcore.config import Config
from segcore.data.synthetic import generate_scene
from segcore.errors import ArtifactError, ConfigError
from segcore.export import export_model
from segcore.models import build_segmenter
from segcore.products import class_plan
from segcore.runtime import load_export
from segcore.style import palette, read_qml_palette

SMALL = {"student.width": 16, "student.groups": 4, "student.embed_dim": 16, "model.embed_dim": 16,
         "model.temperature": 0.1, "data.gsd": 0.5}
ORIGIN = (500000.0, 5000000.0)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    cfg = Config().replace(**SMALL)
    torch.manual_seed(0)
    return export_model(build_segmenter(cfg), cfg, tmp_path_factory.mktemp("exp") / "export",
                        codebook=CodebookRequest(k=6, windows=8))


def _write_rgb(path, image, col, row):
    t = Affine(0.5, 0, ORIGIN[0] + col * 0.5, 0, -0.5, ORIGIN[1] - row * 0.5)
    profile = {"driver": "GTiff", "width": image.shape[1], "height": image.shape[0], "count": 3, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": t}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(image.transpose(2, 0, 1))
    return path


@pytest.fixture
def two_cuts(tmp_path):
    """Two overlapping rasters cut from one 400 x 420 scene: columns 0..299 and 80..419."""
    scene = generate_scene((400, 420), 11).image
    src = tmp_path / "in"
    src.mkdir()
    _write_rgb(src / "a.tif", scene[:, :300], 0, 0)
    _write_rgb(src / "b.tif", scene[:, 80:], 80, 0)
    return src


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds


def _overlap_agreement(out_dir, margin=0):
    """Share of equal labels where the two cuts overlap, ``margin`` px away from either cut's edge."""
    a, _ = _read(out_dir / "a.tif")
    b, _ = _read(out_dir / "b.tif")
    return (a[:, 80 + margin : 300 - margin] == b[:, margin : 220 - margin]).mean()


def test_codebook_ids_agree_across_rasters_and_mosaic(export_dir, two_cuts, tmp_path, capsys):
    out = tmp_path / "pred"
    # The region vote and the class prior (both on by default) are off here: the vote's regions are
    # sized by each raster and the prior's class shares are each raster's own, so either can differ
    # between two overlapping cuts; this test is about the codebook's ids.
    assert cli_main(["predict", str(two_cuts), str(out), "predict.region_m=0", "predict.prior_rounds=0",
                     "--export", str(export_dir),
                     "--no-progress", "--classes", "codebook"]) == 0
    agree = _overlap_agreement(out)
    assert agree >= 0.95
    printed = capsys.readouterr().out
    assert "codebook classes k=6" in printed
    assert "mosaic.vrt" in printed
    with rasterio.open(out / "mosaic.vrt") as ds:
        assert (ds.width, ds.height) == (420, 400)
        mosaic = ds.read(1)
        assert ds.colormap(1)[1] == (*palette(6)[0], 255)
    b, _ = _read(out / "b.tif")
    np.testing.assert_array_equal(mosaic[:, 80:], b)  # the later raster is drawn over the earlier one
    # Per-raster prototypes: the ids of the same ground disagree (what the codebook fixes).
    out_r = tmp_path / "pred_r"
    assert cli_main(["predict", str(two_cuts), str(out_r), "predict.region_m=0", "--export", str(export_dir),
                     "--no-progress", "--classes", "raster", "--k", "6"]) == 0
    assert _overlap_agreement(out_r) < agree - 0.2


def test_style_names_and_vector_from_the_cli(export_dir, two_cuts, tmp_path):
    names = ["water", "forest", "field", "meadow", "road", "roof"]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    out, gpkg = tmp_path / "a_labels.tif", tmp_path / "a.gpkg"
    assert cli_main(["predict", str(two_cuts / "a.tif"), str(out), "--export", str(export_dir), "--no-progress",
                     "--class-names", str(tmp_path / "names.txt"), "--vector", str(gpkg)]) == 0
    labels, _ = _read(out)
    with rasterio.open(out) as ds:
        assert ds.descriptions[0] == "segcore classes: codebook, k=6"
        assert json.loads(ds.tags(1)["class_names"]) == names
        cmap, transform = ds.colormap(1), ds.transform
    qml = read_qml_palette(tmp_path / "a_labels.qml")
    assert {v: label for v, (_, label) in qml.items()} == dict(enumerate(names, start=1))
    assert all(colour == "#{:02x}{:02x}{:02x}".format(*cmap[v][:3]) for v, (colour, _) in qml.items())
    meta, _, wkb, (ids, cls_names, _) = pyogrio.raw.read(gpkg)
    assert meta["crs"] == "EPSG:32633"
    geoms = shapely.from_wkb(wkb)
    back = features.rasterize(zip(geoms, ids, strict=True), out_shape=labels.shape, transform=transform, fill=0,
                              dtype="uint8")
    np.testing.assert_array_equal(back, labels)
    assert {names[i - 1] for i in ids} == set(cls_names)


def test_class_plan_modes_and_errors(export_dir, tmp_path):
    model = load_export(export_dir)
    auto = class_plan(model, export_dir)
    assert (auto.mode, auto.k, auto.names) == ("codebook", 6, [f"class {i}" for i in range(1, 7)])
    raster = class_plan(model, export_dir, "raster", 4)
    assert (raster.mode, raster.codebook, raster.k) == ("raster", None, 4)
    assert class_plan(model, export_dir, "auto", 4).mode == "raster"  # another k than the codebook's
    with pytest.raises(ConfigError, match="has k=6"):
        class_plan(model, export_dir, "codebook", 4)
    with pytest.raises(ConfigError, match="exactly one name per class"):
        class_plan(model, export_dir, names=["a", "b"])
    cfg = Config().replace(**SMALL)
    plain = export_model(build_segmenter(cfg), cfg, tmp_path / "plain")
    with pytest.raises(ConfigError, match="has no codebook"):
        class_plan(load_export(plain), plain, "codebook")
    assert class_plan(load_export(plain), plain).mode == "raster"


def test_champion_is_the_newest_export_and_predict_says_so(export_dir, two_cuts, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = tmp_path / "work"
    with pytest.raises(ArtifactError, match="--export DIR"):
        find_champion(work)
    cfg = Config().replace(**SMALL)
    old = export_model(build_segmenter(cfg), cfg, work / "exports" / "run-old")
    new = export_model(build_segmenter(cfg), cfg, work / "exports" / "run-new")
    later = time.time() + 5
    os.utime(new / "meta.json", (later, later))
    (work / "exports" / "broken").mkdir()  # not an export: ignored
    assert newest_export(work) == new != old
    path, why = find_champion(work, tracking_uri="sqlite:///mlflow.db")
    assert path == new
    assert "not a tracking server" in why
    out = tmp_path / "c.tif"
    monkeypatch.chdir(tmp_path)
    assert cli_main(["predict", str(two_cuts / "a.tif"), str(out), "--work-dir", "work", "--no-progress"]) == 0
    assert f"using export {os.path.join('work', 'exports', 'run-new')}" in capsys.readouterr().out
    assert predict_command(new).startswith(f"segcore predict IN.tif OUT.tif --export {new.resolve()}")


def test_codebook_prediction_is_the_same_whatever_the_tiles(export_dir, two_cuts, tmp_path):
    from segcore.codebook import load_codebook
    from segcore.predict import predict_raster

    model = load_export(export_dir)
    cb = load_codebook(export_dir, model.meta)
    src = two_cuts / "b.tif"
    tiled = predict_raster(src, tmp_path / "tiled.tif", model, tile=64, halo=0, codebook=cb, progress=False)
    whole = predict_raster(src, tmp_path / "whole.tif", model, tile=4096, codebook=cb, progress=False)
    assert tiled.tiles > 1
    assert (tiled.classes, tiled.k) == ("codebook", 6)
    assert tiled.prior == pytest.approx(whole.prior, abs=1e-5)  # one prior per raster, whatever the tiles
    assert sum(whole.prior) == pytest.approx(1.0, abs=1e-5)
    # Identical up to float32 near-ties: BLAS sums in another order when a tile's width changes the
    # im2col chunking (measured: 4 of 136 000 pixels).
    assert (_read(tmp_path / "tiled.tif")[0] != _read(tmp_path / "whole.tif")[0]).mean() < 1e-4


def test_class_prior_pulls_pixels_to_the_main_classes(export_dir, two_cuts, tmp_path, monkeypatch):
    import segcore.predict
    from segcore.codebook import load_codebook
    from segcore.predict import predict_raster

    model = load_export(export_dir)
    cb = load_codebook(export_dir, model.meta)
    src = two_cuts / "b.tif"
    reads = []
    read_reflected = segcore.predict.read_reflected
    monkeypatch.setattr(segcore.predict, "read_reflected", lambda *a: reads.append(a[-1]) or read_reflected(*a))
    plain = predict_raster(src, tmp_path / "plain.tif", model, codebook=cb, prior_rounds=0, progress=False)
    prior = predict_raster(src, tmp_path / "prior.tif", model, codebook=cb, progress=False)
    # One tile and one sample window: the tile reuses the prior pass's read and embedding.
    assert (plain.tiles, prior.tiles, len(reads)) == (1, 1, 2)
    assert (plain.prior, plain.sample_cells) == ((), 0)  # no prior: no sampling pass
    assert len(prior.prior) == 6
    assert prior.sample_cells > 0
    with rasterio.open(tmp_path / "prior.tif") as ds:
        assert json.loads(ds.tags()["class_prior"]) == pytest.approx(list(prior.prior))
    a, b = _read(tmp_path / "plain.tif")[0], _read(tmp_path / "prior.tif")[0]
    share = lambda labels, ids: np.isin(labels, ids).mean()  # noqa: E731
    main = np.argsort(prior.prior)[::-1][:2] + 1  # the raster's two largest classes
    assert share(b, main) > share(a, main)  # pixels join the main classes
    assert 0.0 < (a != b).mean() < 0.5  # only the undecided ones move
    with pytest.raises(ConfigError, match=r"predict\.prior_rounds"):
        predict_raster(src, tmp_path / "x.tif", model, codebook=cb, prior_rounds=-1, progress=False)


def test_codebook_ids_named_alike_are_one_class(export_dir, two_cuts, tmp_path):
    from segcore.codebook import load_codebook
    from segcore.predict import predict_raster

    model = load_export(export_dir)
    cb = load_codebook(export_dir, model.meta)
    src = two_cuts / "a.tif"
    names = ["field", "water", "field", "forest", "water", "field"]  # one per codebook id
    ids = predict_raster(src, tmp_path / "ids.tif", model, codebook=cb, prior_rounds=0, progress=False)
    merged = predict_raster(src, tmp_path / "merged.tif", model, codebook=cb, prior_rounds=0, class_names=names,
                            progress=False)
    assert (ids.k, merged.k, merged.class_names) == (6, 3, ("field", "water", "forest"))
    a, b = _read(tmp_path / "ids.tif")[0], _read(tmp_path / "merged.tif")[0]
    group = np.array([0, 1, 2, 1, 3, 2, 1])  # id -> merged class (0: nodata)
    assert set(np.unique(b)) == {1, 2, 3}
    # Without prior and vote a pixel takes the class of its most likely id: the merge relabels the
    # ids (up to interpolating the merged scores rather than the ids' own between cell centres).
    assert (group[a] == b).mean() > 0.99
    with rasterio.open(tmp_path / "merged.tif") as ds:
        assert json.loads(ds.tags(1)["class_names"]) == ["field", "water", "forest"]
    qml = read_qml_palette(tmp_path / "merged.qml")
    assert [label for _, label in qml.values()] == ["field", "water", "forest"]
    # With the defaults (prior, vote) the prior is over the merged classes.
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    assert cli_main(["predict", str(src), str(tmp_path / "cli.tif"), "--export", str(export_dir), "--no-progress",
                     "--class-names", str(tmp_path / "names.txt")]) == 0
    with rasterio.open(tmp_path / "cli.tif") as ds:
        assert len(json.loads(ds.tags()["class_prior"])) == 3
        assert int(ds.read(1).max()) <= 3
    # Per-raster ids mean nothing from one raster to the next: naming two alike is an error.
    with pytest.raises(ConfigError, match="only codebook ids"):
        predict_raster(src, tmp_path / "x.tif", model, 6, class_names=names, progress=False)
    with pytest.raises(ConfigError, match="only codebook ids"):
        class_plan(model, export_dir, "raster", 6, names=names)
    plan = class_plan(model, export_dir, names=names)
    assert (plan.k, plan.names, plan.legend) == (6, names, ["field", "water", "forest"])


def test_region_vote_regions_are_anchored_to_the_map(export_dir, two_cuts, tmp_path):
    # With the region vote on, seeds sit on a grid in map coordinates, so two overlapping cuts get the
    # same regions. Both cuts are read at their own 0.5 m (the default grid would shrink the two small
    # cuts by different factors, to keep data.min_side) and the 30 m side is under a quarter of either.
    out = tmp_path / "pred"
    assert cli_main(["predict", str(two_cuts), str(out), "predict.region_m=30", "data.gsd=0", "--export",
                     str(export_dir),
                     "--no-progress", "--classes", "codebook"]) == 0
    # Regions stop at each cut's edge, so compare one region side (60 px) away from both cuts' edges
    # (measured: 0.959 there, 0.926 over the whole overlap; 0.893 with seeds on each raster's own grid).
    assert _overlap_agreement(out, 60) >= 0.95
