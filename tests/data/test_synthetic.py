"""Synthetic scenes: determinism, class layout, colour-vs-texture design, GeoTIFF and dataset writers."""

from __future__ import annotations

import argparse
import csv

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from scipy import ndimage

from segcore.cli import synth as synth_cli
from segcore.data.slic import compute_slic
from segcore.data.synthetic import (
    CLASS_NAMES,
    FIELD,
    FOREST,
    MEADOW,
    generate_scene,
    scene_seed,
    scene_to_sample,
    write_scene_geotiff,
    write_synthetic_dataset,
)
from segcore.errors import ConfigError


def test_same_seed_same_scene_other_seed_differs():
    a, b, c = generate_scene(128, 11), generate_scene(128, 11), generate_scene(128, 12)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert (a.image != c.image).mean() > 0.5
    assert (a.labels != c.labels).mean() > 0.1


@pytest.mark.parametrize("size", [128, (96, 200), (200, 96)])
def test_shapes_dtypes_and_value_ranges(size):
    scene = generate_scene(size, 3)
    h, w = (size, size) if isinstance(size, int) else size
    assert scene.image.shape == (h, w, 3)
    assert scene.image.dtype == np.uint8
    assert scene.labels.shape == (h, w)
    assert scene.labels.dtype == np.uint8
    assert scene.image.min() >= 1  # 0 stays free for nodata
    assert set(np.unique(scene.labels).tolist()) <= set(range(1, 7))
    assert scene.class_names == CLASS_NAMES


def test_all_classes_appear_and_num_classes_limits_them():
    seen = set()
    for seed in range(3):
        seen |= set(np.unique(generate_scene(384, seed).labels).tolist())
    assert seen == set(range(1, 7))
    four = generate_scene(256, 0, num_classes=4)
    assert set(np.unique(four.labels).tolist()) <= {1, 2, 3, 4}
    assert four.class_names == ("field", "meadow", "forest", "water")
    with pytest.raises(ConfigError, match="num_classes"):
        generate_scene(64, 0, num_classes=7)
    with pytest.raises(ConfigError, match="at least 16"):
        generate_scene((8, 64), 0)


def test_fields_and_meadows_share_colour_but_not_texture():
    """Mean colour cannot tell field from meadow; band-pass energy (furrows) can."""
    pixels, energy = {FIELD: [], MEADOW: [], FOREST: []}, {FIELD: [], MEADOW: []}
    for seed in range(3):
        scene = generate_scene(512, 200 + seed)
        grey = ndimage.gaussian_filter(scene.image.astype(np.float64).mean(-1), 1.0)  # drop pixel noise
        band = (grey - ndimage.uniform_filter(grey, 9)) ** 2  # detail at 2..9 px scales
        for cls in pixels:
            pixels[cls].append(scene.image[scene.labels == cls].astype(np.float64))
        for cls in energy:
            energy[cls].append(band[scene.labels == cls])
    field, meadow, forest = (np.concatenate(pixels[c]).mean(0) for c in (FIELD, MEADOW, FOREST))
    # Same palette: the pooled means differ only by which parcels happened to draw which colour
    # (a few grey levels, up to ~15 over three scenes), far less than forest differs from either.
    assert np.abs(field - meadow).max() < 20
    assert np.abs(field - forest).max() > 3 * np.abs(field - meadow).max()
    assert np.abs(meadow - forest).max() > 3 * np.abs(field - meadow).max()
    assert np.concatenate(energy[FIELD]).mean() > 5 * np.concatenate(energy[MEADOW]).mean()


def test_illumination_varies_smoothly_across_the_scene():
    scene = generate_scene(512, 5)
    meadow = scene.labels == MEADOW
    grey = scene.image.astype(np.float64).mean(-1)
    # Mean meadow brightness per 128-px block differs between blocks (gain field), beyond noise.
    blocks = [grey[r : r + 128, c : c + 128][meadow[r : r + 128, c : c + 128]] for r in (0, 384) for c in (0, 384)]
    block_means = [b.mean() for b in blocks if b.size > 500]
    assert len(block_means) >= 2
    assert np.ptp(block_means) > 5


def test_scene_to_sample_follows_the_contract():
    scene = generate_scene((64, 96), 2)
    sample = scene_to_sample(scene, require_slic=True, slic_region_size=16, slic_compactness=10.0)
    assert sample["image"].shape == (3, 64, 96)
    assert sample["image"].dtype == torch.float32
    torch.testing.assert_close(sample["image"][:, 10, 20], torch.from_numpy(scene.image[10, 20] / 255.0).float())
    assert sample["slic"].dtype == torch.int64
    assert sample["target"].dtype == torch.int64
    assert sample["valid"].dtype == torch.bool
    assert torch.equal(sample["target"], torch.from_numpy(scene.labels.astype(np.int64)))
    assert bool(sample["valid"].all())
    ids = torch.unique(sample["slic"]).tolist()
    assert ids == list(range(1, len(ids) + 1))
    assert 12 <= len(ids) <= 48  # about ceil(64 * 96 / 16**2) = 24 superpixels
    assert sample["meta"]["window"] == [0, 0, 96, 64]
    no_slic = scene_to_sample(scene, require_slic=False)
    assert int(no_slic["slic"].abs().sum()) == 0


def test_compute_slic_masks_invalid_pixels_and_is_deterministic():
    image = generate_scene(80, 4).image
    valid = np.ones((80, 80), bool)
    valid[:, :10] = False
    seg = compute_slic(image, valid, region_size=16, compactness=10.0)
    assert seg.dtype == np.int64
    assert np.all(seg[:, :10] == 0)
    assert np.all(seg[valid] > 0)
    assert np.unique(seg[valid]).tolist() == list(range(1, seg.max() + 1))
    np.testing.assert_array_equal(compute_slic(image, valid, 16, 10.0), seg)
    assert np.all(compute_slic(image, np.zeros((80, 80), bool), 16, 10.0) == 0)


def test_geotiff_round_trip(tmp_path):
    scene = generate_scene((96, 160), 9)
    img_path, lbl_path = tmp_path / "img.tif", tmp_path / "lbl.tif"
    write_scene_geotiff(scene, img_path, lbl_path, origin=(600000.0, 4000000.0), pixel_size=2.0, nodata_border=5)
    expected_transform = Affine(2.0, 0.0, 600000.0, 0.0, -2.0, 4000000.0)
    with rasterio.open(img_path) as src:
        assert (src.count, src.height, src.width, src.dtypes[0]) == (3, 96, 160, "uint8")
        assert src.crs.to_epsg() == 32633
        assert src.transform == expected_transform
        assert src.nodata == 0
        assert src.block_shapes[0] == (256, 256)
        assert src.compression.value.lower() == "deflate"
        data = src.read()
    with rasterio.open(lbl_path) as src:
        assert (src.count, src.crs.to_epsg(), src.transform) == (1, 32633, expected_transform)
        assert src.tags()["class_names"] == ",".join(CLASS_NAMES)
        labels = src.read(1)
    inner = (slice(5, -5), slice(5, -5))
    np.testing.assert_array_equal(data.transpose(1, 2, 0)[inner], scene.image[inner])
    np.testing.assert_array_equal(labels[inner], scene.labels[inner])
    border = np.ones((96, 160), bool)
    border[inner] = False
    assert np.all(data[:, border] == 0)
    assert np.all(labels[border] == 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.tif", "lbl.tif"]  # no temp files left


def test_write_synthetic_dataset(tmp_path):
    out = write_synthetic_dataset(tmp_path / "ds", count=5, size=(64, 80), seed=1)
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["split"] for r in rows] == ["train"] * 4 + ["val"]
    assert rows[0] == {"image": "images/scene-000.tif", "label": "labels/scene-000.tif", "split": "train"}
    with open(out / "classes.csv", newline="") as fh:
        classes = {int(r["id"]): r["name"] for r in csv.DictReader(fh)}
    assert classes == {0: "ignore", **dict(enumerate(CLASS_NAMES, start=1))}
    origins = []
    for i, row in enumerate(rows):
        with rasterio.open(out / row["image"]) as src:
            origins.append((src.transform.c, src.transform.f))
            expected = generate_scene((64, 80), scene_seed(1, i)).image
            np.testing.assert_array_equal(src.read().transpose(1, 2, 0), expected)
    assert len(set(origins)) == 5
    assert len({scene_seed(1, i) for i in range(5)} | {scene_seed(2, 0)}) == 6


def test_synth_cli_writes_a_dataset(tmp_path):
    parser = argparse.ArgumentParser()
    synth_cli.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "cli"), "--count", "2", "--size", "48x64", "--seed", "4"])
    assert synth_cli.run(args) == 0
    with rasterio.open(tmp_path / "cli" / "labels" / "scene-001.tif") as src:
        assert src.shape == (48, 64)
    assert (tmp_path / "cli" / "manifest.csv").read_text().count("\n") == 3
    with pytest.raises(SystemExit):
        parser.parse_args([str(tmp_path), "--size", "big"])
