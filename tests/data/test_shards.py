"""Shard builder: layout, index contents, georeferencing, resume after a kill, parallel == serial, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.windows import Window

from segcore.data.shards import build_shards
from segcore.errors import ConfigError, RasterError, ShardError
from tests.data.conftest import SHARED_DATA, make_cfg, rio_window_transform, snapshot, write_tif

# 260x300 rasters in 128 px tiles: rows at 0, 128, 132 and columns at 0, 128, 172 (last ones shifted inward).
TILES_PER_RASTER = 9


def test_layout_index_and_manifest(labelled_dir: Path, tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path / "out", manifest=str(labelled_dir / "manifest.csv"), val_fraction=0.34)
    summary = build_shards(cfg, progress=False)
    root = tmp_path / "out" / "unit"
    manifest = json.loads((root / "manifest.json").read_text())
    # bravo has a 40 px nodata border: its top-left tile is 1 - (128*128 - 88*88) / 128**2 = 0.47 valid.
    assert summary.tiles_skipped == {"valid fraction below data.min_valid": 1}
    assert summary.tiles_written == 3 * TILES_PER_RASTER - 1
    assert manifest["counts"]["tiles_written"] == summary.tiles_written
    assert sorted(manifest["splits"]) == ["train", "val"]
    assert manifest["splits"]["val"]["tiles"] in (8, 9)
    assert manifest["splits"]["train"]["tiles"] in (17, 18)
    assert set(manifest["versions"]) >= {"segcore", "rasterio", "numpy", "skimage"}
    assert "num_workers" not in manifest["config"]["data"]
    assert not (tmp_path / "out" / ".staging-unit").exists()
    for split, entry in manifest["splits"].items():
        for rel in entry["shards"]:
            shard = root / rel
            assert rel.startswith(f"{split}/shard-")
            index = pd.read_csv(shard / "index.csv", keep_default_na=False)
            assert 1 <= len(index) <= 4
            assert index["split"].eq(split).all()
            assert index["has_target"].all()
            assert index["has_slic"].all()
            assert (index["valid_fraction"] >= 0.5).all()
            assert sorted(p.name for p in shard.iterdir()) == sorted(
                ["index.csv", "shard.json", *index["rgb_file"], *index["slic_file"], *index["target_file"]]
            )
    sources = {Path(s["image"]).stem: s for s in manifest["sources"]}
    assert sources["bravo"]["tiles_skipped"] == {"valid fraction below data.min_valid": 1}
    assert all(len(s["sha256"]) == 64 and len(s["splits"]) == 1 for s in sources.values())


def test_tile_georeferencing_and_contents(labelled_dir: Path, tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path / "out", manifest=str(labelled_dir / "manifest.csv"))
    build_shards(cfg, progress=False)
    for shard in sorted((tmp_path / "out" / "unit").glob("*/shard-*")):
        for row in pd.read_csv(shard / "index.csv", keep_default_na=False).to_dict("records"):
            window = Window(row["col_off"], row["row_off"], row["width"], row["height"])
            with rasterio.open(row["source"]) as src, rasterio.open(shard / row["rgb_file"]) as tile:
                assert tile.crs == src.crs
                assert tile.transform == rio_window_transform(window, src.transform)
                expected = src.read(window=window)
                valid = tile.read_masks(1) > 0
                np.testing.assert_array_equal(tile.read()[:, valid], expected[:, valid])
                assert valid.mean() == pytest.approx(row["valid_fraction"])
            with rasterio.open(row["label_source"]) as lab, rasterio.open(shard / row["target_file"]) as tgt:
                np.testing.assert_array_equal(tgt.read(1), lab.read(1, window=window))
            with rasterio.open(shard / row["slic_file"]) as slic:
                ids = slic.read(1)
                assert ids.max() == row["n_superpixels"] > 1
                assert (ids[~valid] == 0).all()
                assert (ids[valid] >= 1).all()


def test_splits_are_spatial_and_manifest_split_wins(labelled_dir: Path, tmp_path: Path) -> None:
    manifest = labelled_dir / "manifest.csv"
    manifest.write_text(manifest.read_text().replace("images/charlie.tif,labels/charlie.tif", "images/charlie.tif,"))
    lines = manifest.read_text().splitlines()
    forced = ["image,label,split", lines[1] + ",test", lines[2] + ",", lines[3] + ","]
    manifest.write_text("\n".join(forced) + "\n")
    cfg = make_cfg(tmp_path / "out", manifest=str(manifest), val_fraction=0.5)
    build_shards(cfg, progress=False)
    sources = {
        Path(s["image"]).stem: s["splits"]
        for s in json.loads((tmp_path / "out/unit/manifest.json").read_text())["sources"]
    }
    # alpha forced to test; bravo is the only other labelled raster -> val; unlabelled charlie always trains.
    assert sources == {"alpha": ["test"], "bravo": ["val"], "charlie": ["train"]}


def test_block_split_keeps_blocks_whole(make_scene, tmp_path: Path) -> None:
    image, _label = make_scene("wide", height=260, width=600, seed=3)
    cfg = make_cfg(
        tmp_path / "out", raster_paths=(str(image),), split_policy="block", split_block_tiles=1, val_fraction=0.5
    )
    summary = build_shards(cfg, progress=False)
    rows = pd.concat(pd.read_csv(p, keep_default_na=False) for p in (tmp_path / "out/unit").rglob("index.csv"))
    assert set(rows["split"]) == {"train", "val"}
    masks = {s: np.zeros((260, 600), bool) for s in ("train", "val")}
    for r in rows.to_dict("records"):
        masks[r["split"]][r["row_off"] : r["row_off"] + 128, r["col_off"] : r["col_off"] + 128] = True
    assert not (masks["train"] & masks["val"]).any()  # no pixel on both sides
    assert summary.tiles_written + sum(summary.tiles_skipped.values()) == 3 * 5


def test_kill_and_rerun_is_byte_identical(labelled_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = make_cfg(out, manifest=str(labelled_dir / "manifest.csv"), tiles_per_shard=2)
    build_shards(cfg, progress=False)
    reference = snapshot(out)
    shutil.rmtree(out)
    script = textwrap.dedent(
        f"""
        import os, json
        from segcore.config import Config
        from segcore.data.shards import build_shards
        cfg = Config.from_dict(json.loads({json.dumps(json.dumps(cfg.to_dict()))}))
        def die(result):
            os._exit(9)  # like SIGKILL: no cleanup, no finally blocks
        build_shards(cfg, progress=False, on_shard_done=die)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2], check=False)
    assert done.returncode == 9
    assert not (out / "unit").exists()  # nothing published
    staged = sorted(p.name for p in (out / ".staging-unit").glob("*/shard-*"))
    assert staged == ["shard-00000"]
    half = out / ".staging-unit" / "train" / ".tmp-shard-00003-123"  # a shard half-written at the kill
    half.mkdir(parents=True)
    (half / "00000.rgb.tif").write_bytes(b"partial")
    summary = build_shards(cfg, progress=False)
    assert summary.shards_reused == 1
    assert snapshot(out) == reference
    again = build_shards(cfg, progress=False)  # a finished build is reused whole
    assert again.shards_written == 0
    assert snapshot(out) == reference


def test_parallel_build_equals_serial(labelled_dir: Path, tmp_path: Path) -> None:
    serial = make_cfg(tmp_path / "a", manifest=str(labelled_dir / "manifest.csv"))
    build_shards(serial, progress=False)
    parallel = serial.replace(**{"data.num_workers": 2, "data.processed_root": str(tmp_path / "b")})
    build_shards(parallel, progress=False)
    a, b = snapshot(tmp_path / "a"), snapshot(tmp_path / "b")
    manifest_a, manifest_b = json.loads(a.pop("unit/manifest.json")), json.loads(b.pop("unit/manifest.json"))
    assert a == b
    manifest_b["config"]["data"]["processed_root"] = str(tmp_path / "a")
    assert manifest_a == manifest_b


def test_sixteen_bit_raster_is_scaled(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = (1000 + rng.integers(0, 3000, size=(4, 200, 200))).astype(np.uint16)
    path = write_tif(tmp_path / "u16.tif", data)
    cfg = make_cfg(tmp_path / "out", raster_paths=(str(path),), val_fraction=0.0, bands=(3, 2, 1))
    build_shards(cfg, progress=False)
    source = json.loads((tmp_path / "out/unit/manifest.json").read_text())["sources"][0]
    assert source["bands"] == [3, 2, 1]
    assert source["dtype"] == "uint16"
    low, high = source["scaling"]["low"], source["scaling"]["high"]
    assert low[0] == pytest.approx(np.percentile(data[2, ::1, ::1], 2), rel=0.01)
    assert high[2] == pytest.approx(np.percentile(data[0], 98), rel=0.01)
    tile = next((tmp_path / "out/unit/train").rglob("00000.rgb.tif"))
    with rasterio.open(tile) as ds:
        rgb = ds.read()
    expected = np.clip(np.rint((data[2, :128, :128] - low[0]) * 255.0 / (high[0] - low[0])), 0, 255)
    np.testing.assert_allclose(rgb[0], expected, atol=1)


def test_raster_smaller_than_a_tile_gives_one_tile_of_its_size(make_scene, tmp_path: Path) -> None:
    # Before the working-resolution change a 100 x 120 raster became one padded 128 px tile with a
    # valid fraction of 0.73; a 300 px drone chip under a 512 px tile (0.34 valid) was refused.
    image, _ = make_scene("tiny", height=100, width=120)
    cfg = make_cfg(tmp_path / "out", raster_paths=(str(image),), val_fraction=0.0, min_valid=0.9)
    summary = build_shards(cfg, progress=False)
    assert summary.tiles_written == 1
    row = pd.read_csv(next((tmp_path / "out").rglob("index.csv"))).iloc[0]
    assert (row["width"], row["height"]) == (120, 100)
    assert row["valid_fraction"] == pytest.approx(1.0)


def test_tiles_are_cut_on_the_working_grid(make_scene, tmp_path: Path) -> None:
    # 10 m pixels read at 20 m: a 100 x 120 raster is a 50 x 60 working grid, one tile, with the
    # working transform (pixel size doubled) and average-resampled pixels.
    image, _ = make_scene("coarse", height=100, width=120)
    cfg = make_cfg(tmp_path / "out", raster_paths=(str(image),), val_fraction=0.0, gsd=20.0, min_side=16)
    build_shards(cfg, progress=False)
    shard = next((tmp_path / "out" / "unit").glob("*/shard-*"))
    row = pd.read_csv(shard / "index.csv").iloc[0]
    assert (row["width"], row["height"]) == (60, 50)
    with rasterio.open(image) as src, rasterio.open(shard / row["rgb_file"]) as tile:
        assert tile.transform.a == pytest.approx(2 * src.transform.a)
        assert tile.transform.e == pytest.approx(2 * src.transform.e)
        assert (tile.transform.c, tile.transform.f) == (src.transform.c, src.transform.f)
        mean = src.read().astype(np.float64).reshape(3, 50, 2, 60, 2).mean(axis=(2, 4))
        assert np.abs(tile.read().astype(np.float64) - mean).max() <= 1.0


# ---- bad input: each names the file and the problem --------------------------------------------


def _expect(cfg, exc_type, *patterns) -> str:
    with pytest.raises(exc_type) as info:
        build_shards(cfg, progress=False)
    for pattern in patterns:
        assert pattern in str(info.value)
    assert not (Path(cfg.data.processed_root) / cfg.data.dataset).exists()
    return str(info.value)


def test_truncated_geotiff(make_scene, tmp_path: Path) -> None:
    image, _ = make_scene("cut")
    blob = image.read_bytes()
    image.write_bytes(blob[: len(blob) // 2])
    _expect(make_cfg(tmp_path / "out", raster_paths=(str(image),)), RasterError, str(image), "truncated")


def test_not_a_raster(tmp_path: Path) -> None:
    path = tmp_path / "notes.tif"
    path.write_text("this is not an image\n")
    _expect(make_cfg(tmp_path / "out", raster_paths=(str(path),)), RasterError, str(path), "not a readable raster")


def test_one_band_raster(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "gray.tif", np.ones((1, 64, 64), np.uint8))
    _expect(make_cfg(tmp_path / "out", raster_paths=(str(path),)), RasterError, str(path), "1 band(s)")


def test_all_nodata_raster(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "empty.tif", np.zeros((3, 150, 150), np.uint8), nodata=0)
    _expect(make_cfg(tmp_path / "out", raster_paths=(str(path),)), RasterError, str(path), "every pixel is nodata")


def test_label_size_mismatch(make_scene, tmp_path: Path) -> None:
    image, label = make_scene("a")
    write_tif(label, np.ones((1, 100, 100), np.uint8))
    (tmp_path / "m.csv").write_text(f"image,label\n{image},{label}\n")
    _expect(make_cfg(tmp_path / "out", manifest=str(tmp_path / "m.csv")), RasterError, str(label), "pixel grid")


def test_label_crs_mismatch(make_scene, tmp_path: Path) -> None:
    image, label = make_scene("a")
    write_tif(label, np.ones((1, 260, 300), np.uint8), crs="EPSG:4326")
    (tmp_path / "m.csv").write_text(f"image,label\n{image},{label}\n")
    _expect(make_cfg(tmp_path / "out", manifest=str(tmp_path / "m.csv")), RasterError, str(label), "CRS")


def test_missing_label_file(make_scene, tmp_path: Path) -> None:
    image, _ = make_scene("a")
    (tmp_path / "m.csv").write_text(f"image,label\n{image},labels/gone.tif\n")
    missing = str(tmp_path / "labels" / "gone.tif")
    _expect(make_cfg(tmp_path / "out", manifest=str(tmp_path / "m.csv")), RasterError, missing, "does not exist")


def test_dataset_name_with_separators(labelled_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.dataset='../x'.*single path component"):
        build_shards(make_cfg(tmp_path / "out", manifest=str(labelled_dir / "manifest.csv"), dataset="../x"))
    assert not (tmp_path / "x").exists()


def test_unwritable_output_directory(labelled_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a regular file, not a directory\n")
    cfg = make_cfg(blocker / "out", manifest=str(labelled_dir / "manifest.csv"))
    _expect(cfg, ShardError, str(blocker / "out"), "data.processed_root")


def test_on_error_skip_builds_the_rest(labelled_dir: Path, tmp_path: Path) -> None:
    bad = write_tif(labelled_dir / "images" / "gray.tif", np.ones((1, 64, 64), np.uint8))
    manifest = labelled_dir / "manifest.csv"
    manifest.write_text(manifest.read_text() + f"{bad},\n")
    cfg = make_cfg(tmp_path / "out", manifest=str(manifest))
    with pytest.raises(RasterError, match=r"gray\.tif"):
        build_shards(cfg, progress=False)
    assert not (tmp_path / "out" / "unit").exists()
    summary = build_shards(cfg, on_error="skip", progress=False)
    assert summary.rasters == 3
    assert [p for p, _ in summary.failures] == [str(bad)]
    assert "gray.tif" in summary.table()
    failures = json.loads((tmp_path / "out/unit/manifest.json").read_text())["failures"]
    assert failures[0]["image"] == str(bad)
    assert "1 band(s)" in failures[0]["error"]


# ---- real data ---------------------------------------------------------------------------------


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent (set SEGCORE_SHARED_DATA to the shared data folder)")
    return path


def test_real_landsat_nodata_borders(tmp_path: Path) -> None:
    path = _shared("RGB.byte.tif")
    cfg = make_cfg(tmp_path / "out", raster_paths=(str(path),), tile_size=256, val_fraction=0.0, slic_region_size=32)
    summary = build_shards(cfg, progress=False)
    assert summary.tiles_skipped.get("valid fraction below data.min_valid", 0) > 0
    indexes = sorted((tmp_path / "out").rglob("index.csv"))
    assert sum(len(pd.read_csv(p)) for p in indexes) == summary.tiles_written
    with rasterio.open(path) as src:
        for index in indexes:
            for row in pd.read_csv(index, keep_default_na=False).to_dict("records"):
                assert row["valid_fraction"] >= 0.5
                window = Window(row["col_off"], row["row_off"], 256, 256)
                with rasterio.open(index.parent / row["rgb_file"]) as tile:
                    assert tile.crs == src.crs
                    assert tile.transform == rio_window_transform(window, src.transform)
                    valid = tile.read_masks(1) > 0
                assert valid.mean() >= 0.5
                np.testing.assert_array_equal(valid, src.dataset_mask(window=window) > 0)


@pytest.mark.slow
def test_real_deepglobe_labels_and_raster_splits(tmp_path: Path) -> None:
    root = _shared("deepglobe-sample")
    rows = (root / "manifest.csv").read_text().splitlines()
    (tmp_path / "m.csv").write_text("\n".join(r.split(",")[0] + "," + r.split(",")[1] for r in rows[:4]) + "\n")
    text = (tmp_path / "m.csv").read_text().replace("images/", f"{root}/images/").replace("labels/", f"{root}/labels/")
    (tmp_path / "m.csv").write_text(text)
    cfg = make_cfg(tmp_path / "out", manifest=str(tmp_path / "m.csv"), tile_size=512, tiles_per_shard=16,
                   slic_region_size=32, val_fraction=0.34, num_workers=2)  # fmt: skip
    summary = build_shards(cfg, progress=False)
    assert summary.tiles_written == 3 * 25  # 2448 px -> offsets 0, 512, 1024, 1536, 1936
    manifest = json.loads((tmp_path / "out/unit/manifest.json").read_text())
    assert sorted(len(s["splits"]) for s in manifest["sources"]) == [1, 1, 1]
    assert sorted(s["splits"][0] for s in manifest["sources"]) == ["train", "train", "val"]
    assert all(s["crs"] is None and s["transform"] is None for s in manifest["sources"])
    index = pd.concat(pd.read_csv(p, keep_default_na=False) for p in (tmp_path / "out").rglob("index.csv"))
    assert index["has_target"].all()
    assert (index["crs"] == "").all()
    row = index.iloc[0]
    shard = next((tmp_path / "out/unit").glob(f"{row['split']}/shard-*/{row['target_file']}")).parent
    with rasterio.open(row["label_source"]) as lab, rasterio.open(shard / row["target_file"]) as tgt:
        window = Window(row["col_off"], row["row_off"], 512, 512)
        np.testing.assert_array_equal(tgt.read(1), lab.read(1, window=window))


def test_corrupt_block_found_while_writing(labelled_dir: Path, tmp_path: Path) -> None:
    """Damage that planning cannot see (a middle block) still fails cleanly, or is skipped and re-planned."""
    image = labelled_dir / "images" / "alpha.tif"
    with rasterio.open(image) as ds:
        rgb = ds.read()
    write_tif(image, rgb, compress="deflate", tiled=True, blockxsize=128, blockysize=128)
    with rasterio.open(image) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
    blob = bytearray(image.read_bytes())
    blob[offset : offset + 64] = b"\xff" * 64
    image.write_bytes(bytes(blob))
    cfg = make_cfg(tmp_path / "out", manifest=str(labelled_dir / "manifest.csv"))
    _expect(cfg, RasterError, str(image), "corrupt")
    summary = build_shards(cfg, on_error="skip", progress=False)
    assert [p for p, _ in summary.failures] == [str(image)]
    assert summary.rasters == 2
    assert summary.tiles_written == 2 * TILES_PER_RASTER - 1


def test_cli_flags_file_and_overrides(labelled_dir: Path, tmp_path: Path, capsys) -> None:
    import argparse

    from segcore.cli import build_shards as cli

    (tmp_path / "cfg.yaml").write_text("data:\n  tile_size: 256\n  dataset: fromfile\n")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        ["--config", str(tmp_path / "cfg.yaml"), "--manifest", str(labelled_dir / "manifest.csv"),
         "--processed-root", str(tmp_path / "out"), "--tile-size", "128", "--no-progress",
         "data.tiles_per_shard=100", "data.val_fraction=0.0"]
    )  # fmt: skip
    assert cli.run(args) == 0
    assert "| tiles written | 26 (train: 26) |" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "fromfile" / "manifest.json").read_text())
    assert manifest["config"]["data"]["tile_size"] == 128
    assert manifest["counts"]["shards"] == 3  # one shard per raster at least (per-raster reuse)
