"""Dataset codebook: k-means++ fit, storage in the export, sources, class names, ids that agree."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from segcore.codebook import (
    CodebookRequest,
    adjacency_counts,
    adjacency_groups,
    class_groups,
    fit_prototypes,
    kmeanspp,
    load_codebook,
    predict_codebook,
    read_class_names,
    resolve_class_names,
)
from segcore.codebook_sources import raster_windows, sample_windows
from segcore.config import Config
from segcore.data.synthetic import generate_scene
from segcore.errors import ArtifactError, ConfigError
from segcore.export import export_model
from segcore.models import build_segmenter
from segcore.runtime import load_export, read_meta

SMALL = {"student.width": 16, "student.groups": 4, "student.embed_dim": 16, "model.embed_dim": 16,
         "model.temperature": 0.1}


def _export(tmp_path, req: CodebookRequest | None = CodebookRequest(k=6, windows=8), **overrides):
    cfg = Config().replace(**{**SMALL, **overrides})
    torch.manual_seed(0)
    return export_model(build_segmenter(cfg), cfg, tmp_path / "export", codebook=req)


def _blobs(n_per: int, centres: np.ndarray, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + spread * rng.standard_normal((n_per, centres.shape[1])) for c in centres])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_kmeans_recovers_separated_clusters_and_is_seeded():
    centres = np.eye(8, dtype=np.float32)[:5]
    x = _blobs(200, centres, 0.05, seed=1)
    protos, record = fit_prototypes(x, 5, seed=3)
    # Every true centre has a prototype within a small angle, so every blob gets its own id.
    assert (centres @ protos.T).max(1).min() > 0.99
    labels = (x @ protos.T).argmax(1).reshape(5, 200)
    assert all(len(set(row)) == 1 for row in labels)
    assert len({row[0] for row in labels}) == 5
    again, record2 = fit_prototypes(x, 5, seed=3)
    np.testing.assert_array_equal(protos, again)
    assert record == record2
    assert record["init"] == "k-means++"
    assert record["seed"] == 3
    assert record["cluster_shares"] == sorted(record["cluster_shares"], reverse=True)


def test_kmeanspp_picks_distinct_points_far_apart():
    x = _blobs(50, np.eye(4, dtype=np.float32), 0.01, seed=0)
    idx = kmeanspp(x, 4, np.random.default_rng(0))
    assert sorted(i // 50 for i in idx) == [0, 1, 2, 3]  # one seed per blob


def test_codebook_stored_in_export_and_loaded(tmp_path):
    out = _export(tmp_path)
    meta = read_meta(out)
    rec = meta["codebook"]
    assert rec["k"] == 6
    assert rec["seed"] == 0
    assert rec["windows"] == 8
    assert rec["init"] == "k-means++"
    assert rec["source"].startswith("synthetic")  # Config().data.source is synthetic
    assert meta["class_names"] == [f"class {i}" for i in range(1, 7)]
    cb = load_codebook(out, meta)
    assert cb.prototypes.shape == (6, 16)
    np.testing.assert_allclose(np.linalg.norm(cb.prototypes, axis=1), 1.0, rtol=1e-5)
    assert len(cb.stats) == rec["norm_layers"] == 6  # stem1, stem2, 3 blocks, centring
    # The same request gives the same codebook (seeded windows and seeding).
    again = load_codebook(_export(tmp_path / "again"), meta)
    np.testing.assert_array_equal(cb.prototypes, again.prototypes)


def test_export_without_codebook_has_none(tmp_path):
    out = _export(tmp_path, req=None)
    assert load_codebook(out, read_meta(out)) is None
    assert not (out / "codebook.npz").exists()


def test_damaged_codebook_is_an_artifact_error(tmp_path):
    out = _export(tmp_path)
    (out / "codebook.npz").write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match=r"codebook\.npz"):
        load_codebook(out, read_meta(out))


def test_ids_agree_on_the_overlap_of_two_crops(tmp_path):
    out = _export(tmp_path)
    model, cb = load_export(out), load_codebook(out, read_meta(out))
    img = generate_scene(400, 5).image
    a, b = predict_codebook(model, cb, img[:, :300]), predict_codebook(model, cb, img[:, 60:])
    agree = (a[:, 60:300] == b[:, :240]).mean()
    assert agree >= 0.95
    # Away from the crop edges (receptive radius) the ids are identical.
    assert (a[32:-32, 92:268] == b[32:-32, 32:208]).mean() > 0.999
    # Per-raster prototypes do not agree (the problem the codebook solves).
    ra = model.segment(img[:, :300], 6)
    rb = model.segment(img[:, 60:], 6)
    assert (ra[:, 60:300] == rb[:, :240]).mean() < agree - 0.2


def test_windows_from_rasters_on_disk(tmp_path):
    scene = generate_scene(200, 3)
    path = tmp_path / "r.tif"
    profile = {"driver": "GTiff", "width": 200, "height": 200, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": Affine(0.5, 0, 500000, 0, -0.5, 5000000)}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(scene.image.transpose(2, 0, 1))
    windows, desc = raster_windows([str(path)], Config().data, 3, 128, seed=0)
    assert len(windows) == 3
    assert "r.tif" in desc
    for rgb, valid in windows:
        assert rgb.shape == (128, 128, 3)
        assert valid.all()
    cfg = Config().replace(**{"data.source": "geotiff", "data.raster_paths": (str(tmp_path),),
                              "data.processed_root": str(tmp_path / "none")})
    windows2, _ = sample_windows(cfg, CodebookRequest(windows=3, side=128))
    np.testing.assert_array_equal(windows[0][0], windows2[0][0])


def test_no_training_data_says_what_to_pass(tmp_path):
    cfg = Config().replace(**{"data.source": "shards", "data.processed_root": str(tmp_path)})
    with pytest.raises(ArtifactError, match="--codebook-data"):
        sample_windows(cfg, CodebookRequest())


def test_class_names_files_and_checks(tmp_path):
    (tmp_path / "names.txt").write_text("# land cover\nwater\n\nforest\nfield\n")
    assert read_class_names(tmp_path / "names.txt") == ["water", "forest", "field"]
    (tmp_path / "names.json").write_text(json.dumps(["a", "b"]))
    assert read_class_names(tmp_path / "names.json") == ["a", "b"]
    (tmp_path / "classes.csv").write_text("id,name\n1,urban\n2,water\n")
    assert read_class_names(tmp_path / "classes.csv") == ["urban", "water"]
    assert resolve_class_names(None, 3) == ["class 1", "class 2", "class 3"]
    with pytest.raises(ValueError, match="exactly one name per class"):
        resolve_class_names(["a", "b"], 3)
    assert resolve_class_names([" a", "a "], 2) == ["a", "a"]  # a name may repeat: one class (class_groups)
    with pytest.raises(ValueError, match="must not be empty"):
        resolve_class_names(["a", " "], 2)


def test_class_groups_merge_ids_named_alike():
    assert class_groups(["a", "b", "c"]) == (["a", "b", "c"], None)  # all distinct: nothing to merge
    legend, groups = class_groups(["field", "water", "field", "forest", "water"])
    assert legend == ["field", "water", "forest"]  # order of first appearance
    assert groups.tolist() == [0, 1, 0, 2, 1]


def test_adjacency_counts_and_groups_join_prototypes_that_sit_side_by_side():
    # Left half: a field of alternating rows of ids 0 and 1; right half: a town mixing 2 and 3 in a
    # checkerboard; one row of id 4 (a road) along the bottom. Ids 0 and 1 never touch 2 or 3 except
    # along the seam, so three classes are the field, the town and the road.
    ids = np.zeros((12, 12), np.int64)
    ids[0:11:2, :6], ids[1:11:2, :6] = 0, 1
    yy, xx = np.mgrid[:11, 6:12]
    ids[:11, 6:] = 2 + (yy + xx) % 2
    ids[11] = 4
    valid = np.ones_like(ids, bool)
    counts = adjacency_counts([ids], [valid], 5)
    assert np.array_equal(counts, counts.T)
    assert counts.sum() == 2 * (12 * 11 * 2)  # every right and below pair, counted both ways
    assert counts[0, 1] == counts[1, 0] == 10 * 6  # 10 row boundaries, 6 cells wide
    assert counts[0, 2] + counts[1, 3] + counts[0, 3] + counts[1, 2] == 11  # the seam, 11 rows high
    group = adjacency_groups(counts, 3)
    assert group[0] == group[1]
    assert group[2] == group[3]
    assert len({group[0], group[2], group[4]}) == 3
    assert group[4] == 2  # the smallest class (fewest neighbour pairs) comes last
    assert sorted(adjacency_groups(counts, 5).tolist()) == [0, 1, 2, 3, 4]
    # Invalid cells count no pairs.
    hole = valid.copy()
    hole[:, :6] = False
    assert adjacency_counts([ids], [hole], 5)[0, 1] == 0
    with pytest.raises(ValueError, match="cannot group"):
        adjacency_groups(counts, 6)


def test_codebook_merged_from_more_prototypes(tmp_path):
    names = ("field", "water", "town")
    out = _export(tmp_path / "m", req=CodebookRequest(k=3, windows=8, merge_from=8, class_names=names))
    meta = read_meta(out)
    record = meta["codebook"]
    assert record["k"] == 8
    assert record["merge"]["criterion"] == "adjacency"
    assert record["merge"]["classes"] == 3
    assert len(record["merge"]["groups"]) == 8
    # Every prototype is named after its class, so predict merges them (ids named alike are one class).
    assert meta["class_names"] == [names[g] for g in record["merge"]["groups"]]
    assert sorted(set(meta["class_names"])) == sorted(names)
    assert load_codebook(out, meta).k == 8
    # segcore predict on that export writes the three classes, with their names, and no fourth id.
    from segcore.cli.main import main as cli_main

    src = tmp_path / "scene.tif"
    image = generate_scene((160, 160), 5).image
    with rasterio.open(src, "w", driver="GTiff", width=160, height=160, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 5000000)) as ds:
        ds.write(image.transpose(2, 0, 1))
    assert cli_main(["predict", str(src), str(tmp_path / "pred.tif"), "data.gsd=0", "--export", str(out),
                     "--no-progress"]) == 0
    with rasterio.open(tmp_path / "pred.tif") as ds:
        labels = ds.read(1)
        assert json.loads(ds.tags(1)["class_names"]) == list(dict.fromkeys(meta["class_names"]))
    assert labels.min() >= 1
    assert labels.max() <= 3
    # At predict time the three classes can be renamed with three names (or the eight prototypes with eight).
    from segcore.products import class_plan

    plan = class_plan(load_export(out), out, names=["a", "b", "c"])
    assert plan.names == [["a", "b", "c"][g] for g in record["merge"]["groups"]]
    assert sorted(plan.legend) == ["a", "b", "c"]
    assert class_plan(load_export(out), out, names=[f"p{i}" for i in range(8)]).legend == [f"p{i}" for i in range(8)]
    with pytest.raises(ConfigError, match="4 class names for k=8"):
        class_plan(load_export(out), out, names=["a", "b", "c", "d"])
    again = read_meta(_export(tmp_path / "m2", req=CodebookRequest(k=3, windows=8, merge_from=8, class_names=names)))
    assert again["codebook"]["merge"] == record["merge"]  # the same seed groups alike
    with pytest.raises(ConfigError, match="must exceed k=3"):
        _export(tmp_path / "bad", req=CodebookRequest(k=3, windows=4, merge_from=3))
    assert not (tmp_path / "bad").exists()  # checked before anything is written


def test_k_follows_the_class_names_and_the_config_key(tmp_path):
    names = ("water", "forest", "field")
    out = _export(tmp_path / "a", req=CodebookRequest(windows=4, class_names=names))
    meta = read_meta(out)
    assert meta["codebook"]["k"] == 3
    assert meta["class_names"] == list(names)
    cfg_names = _export(tmp_path / "b", req=CodebookRequest(windows=4), **{"predict.class_names": names})
    assert read_meta(cfg_names)["class_names"] == list(names)
    assert read_meta(_export(tmp_path / "c", req=CodebookRequest(windows=4)))["codebook"]["k"] == 8


def test_cli_export_with_class_names_and_without_codebook(tmp_path, capsys):
    from segcore.checkpoint import save_checkpoint
    from segcore.cli.main import main as cli_main

    cfg = Config().replace(**SMALL)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "last.pt", {"model": build_segmenter(cfg).state_dict(),
                                                   "config": cfg.to_dict(), "step": 0})
    (tmp_path / "names.txt").write_text("water\nforest\nfield\nroad\n")
    assert cli_main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "e1"),
                     "--class-names", str(tmp_path / "names.txt")]) == 0
    assert "codebook k=4 (water, forest, field, road)" in capsys.readouterr().out
    assert read_meta(tmp_path / "e1")["codebook"]["source"].startswith("synthetic")
    assert cli_main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "e2"), "--no-codebook"]) == 0
    assert not (tmp_path / "e2" / "codebook.npz").exists()
    assert cli_main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "e3"), "--codebook-k", "3",
                     "--class-names", str(tmp_path / "names.txt")]) == 2  # 4 names for 3 classes
    assert "exactly one name per class" in capsys.readouterr().err
    assert cli_main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "e4"), "--codebook-k", "3",
                     "--codebook-merge-from", "9"]) == 0
    assert "codebook k=9 in 3 classes (class 1, class 2, class 3)" in capsys.readouterr().out
    assert len(read_meta(tmp_path / "e4")["class_names"]) == 9
