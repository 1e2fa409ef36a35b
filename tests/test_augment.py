"""Two-view augmentation: alignment of every spatial key, exact inverses, determinism, cfg flags."""

from __future__ import annotations

import itertools

import pytest
import torch

from segcore.augment import apply_geom, augment_batch, invert_geom, photometric, random_geom, two_views
from segcore.config import AugConfig

NO_PHOTO = AugConfig(noise_std=0.0, contrast=0.0, saturation=0.0, brightness=0.0, illumination=0.0)
NO_GEOM = AugConfig(hflip=False, vflip=False, rot90=False)
ALL_GEOMS = [torch.tensor([k, h, v]) for k, h, v in itertools.product(range(4), (0, 1), (0, 1))]


def coded_sample(h: int, w: int) -> dict:
    """A sample whose image encodes each pixel's (row, col); slic/target/valid are functions of it."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    image = torch.stack([rows / (h - 1), cols / (w - 1), torch.full((h, w), 0.5)]).float()
    valid = (rows + 2 * cols) % 5 != 0
    image = image * valid
    return {
        "image": image,
        "slic": rows * w + cols + 1,
        "target": (rows * 3 + cols) % 7,
        "valid": valid,
        "meta": {"source": "test", "window": [0, 0, w, h], "crs": None, "transform": None, "tile_id": "t"},
    }


def check_aligned(view: dict, sample: dict) -> None:
    """Every view pixel's slic/target/valid must belong to the source pixel its RGB encodes."""
    h, w = sample["slic"].shape
    code = view["slic"] - 1
    r_s, c_s = code // w, code % w  # source pixel per the moved slic ids
    valid_view = view["valid"]
    r_i = torch.round(view["image"][0] * (h - 1)).long()
    c_i = torch.round(view["image"][1] * (w - 1)).long()
    assert torch.equal(r_i[valid_view], r_s[valid_view])
    assert torch.equal(c_i[valid_view], c_s[valid_view])
    assert torch.equal(view["target"], sample["target"][r_s, c_s])
    assert torch.equal(view["valid"], sample["valid"][r_s, c_s])
    assert torch.all(view["image"][:, ~valid_view] == 0)
    assert sorted(code.flatten().tolist()) == list(range(h * w))  # a permutation of the pixels


@pytest.mark.parametrize("shape", [(6, 6), (5, 8)])
@pytest.mark.parametrize("geom", ALL_GEOMS, ids=lambda g: "k{}h{}v{}".format(*g.tolist()))
def test_apply_then_invert_is_identity(shape, geom):
    x = torch.arange(2 * shape[0] * shape[1]).reshape(2, *shape)
    y = apply_geom(x, geom)
    assert y.shape[-2:] == (shape if geom[0] % 2 == 0 else shape[::-1])
    assert torch.equal(invert_geom(y, geom), x)


def test_forward_order_matches_the_contract():
    x = torch.arange(12).reshape(3, 4)
    expected = torch.rot90(torch.flip(torch.flip(x, (-1,)), (-2,)), 3, dims=(-2, -1))
    assert torch.equal(apply_geom(x, torch.tensor([3, 1, 1])), expected)
    # hflip alone mirrors columns: the first row reads backwards.
    assert apply_geom(x, torch.tensor([0, 1, 0]))[0].tolist() == [3, 2, 1, 0]


def test_eight_distinct_dihedral_maps_on_square():
    x = torch.arange(16).reshape(4, 4)
    outs = {tuple(apply_geom(x, g).flatten().tolist()) for g in ALL_GEOMS}
    assert len(outs) == 8  # 16 parameter combos, 8 group elements


@pytest.mark.parametrize("shape", [(6, 6), (4, 10)])
def test_batched_geoms_invert_per_item(shape):
    ks = [0, 1, 2, 3] if shape[0] == shape[1] else [0, 2, 2, 0]
    geom = torch.tensor([[k, i % 2, (i // 2) % 2] for i, k in enumerate(ks)])
    x = torch.randn(4, 3, *shape, generator=torch.Generator().manual_seed(0))
    y = apply_geom(x, geom)
    for i in range(4):
        assert torch.equal(y[i], apply_geom(x[i], geom[i]))
    assert torch.equal(invert_geom(y, geom), x)


def test_batched_non_square_rejects_mixed_rotations():
    with pytest.raises(ValueError, match="non-square"):
        apply_geom(torch.zeros(2, 4, 6), torch.tensor([[0, 0, 0], [1, 0, 0]]))


@pytest.mark.parametrize("shape", [(8, 8), (6, 9)])
def test_views_keep_all_keys_aligned(shape):
    sample = coded_sample(*shape)
    gen = torch.Generator().manual_seed(3)
    seen = set()
    for _ in range(12):
        for view in two_views(sample, gen, NO_PHOTO):
            check_aligned(view, sample)
            for key in ("slic", "target", "valid"):
                assert torch.equal(invert_geom(view[key], view["geom"]), sample[key])
            seen.add(tuple(view["geom"].tolist()))
    assert len(seen) > 4  # the draws actually vary the geometry


def test_photometric_touches_image_only():
    sample = coded_sample(8, 8)
    a, b = two_views(sample, torch.Generator().manual_seed(0), NO_GEOM)
    for view in (a, b):
        assert view["geom"].tolist() == [0, 0, 0]
        for key in ("slic", "target", "valid"):
            assert torch.equal(view[key], sample[key])
        assert not torch.equal(view["image"], sample["image"])
        assert view["image"].min() >= 0
        assert view["image"].max() <= 1
        assert torch.all(view["image"][:, ~sample["valid"]] == 0)
    assert sample["meta"] == a["meta"]
    assert a["meta"] is not sample["meta"]


def test_photometric_op_values():
    gen = torch.Generator().manual_seed(1)
    image = 0.3 + 0.4 * torch.rand(3, 6, 6, generator=gen)  # mid-range: no clamping
    valid = torch.ones(6, 6, dtype=torch.bool)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    off = AugConfig(noise_std=0.0, contrast=0.0, saturation=0.0, brightness=0.0, illumination=0.0)
    torch.testing.assert_close(photometric(image, valid, gen, off), image)
    # brightness: one constant shift within +-0.1
    out = photometric(
        image, valid, gen, AugConfig(noise_std=0.0, contrast=0.0, saturation=0.0, brightness=0.1, illumination=0.0)
    )
    shift = out - image
    torch.testing.assert_close(shift, torch.full_like(shift, float(shift[0, 0, 0])))
    assert 0 < abs(float(shift[0, 0, 0])) <= 0.1
    # saturation: each pixel's grey value is unchanged
    out = photometric(
        image, valid, gen, AugConfig(noise_std=0.0, contrast=0.0, saturation=0.2, brightness=0.0, illumination=0.0)
    )
    torch.testing.assert_close((out * luma).sum(0), (image * luma).sum(0))
    # contrast: the mean grey level is unchanged, deviations scale by one factor in 0.8..1.2
    out = photometric(
        image, valid, gen, AugConfig(noise_std=0.0, contrast=0.2, saturation=0.0, brightness=0.0, illumination=0.0)
    )
    grey_in, grey_out = (image * luma).sum(0), (out * luma).sum(0)
    torch.testing.assert_close(grey_out.mean(), grey_in.mean())
    ratio = (out - grey_in.mean()) / (image - grey_in.mean())
    assert 0.8 <= float(ratio.mean()) <= 1.2
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio.mean())), rtol=1e-3, atol=1e-3)


def test_same_seed_same_views_other_seed_differs():
    sample = coded_sample(8, 8)
    cfg = AugConfig()
    a1, b1 = two_views(sample, torch.Generator().manual_seed(7), cfg)
    a2, b2 = two_views(sample, torch.Generator().manual_seed(7), cfg)
    a3, _ = two_views(sample, torch.Generator().manual_seed(8), cfg)
    for key in ("image", "slic", "geom"):
        assert torch.equal(a1[key], a2[key])
        assert torch.equal(b1[key], b2[key])
    assert not torch.equal(a1["image"], a3["image"])


def test_cfg_flags_disable_geometry():
    gen = torch.Generator().manual_seed(0)
    geoms = torch.stack([random_geom(gen, NO_GEOM) for _ in range(20)])
    assert geoms.abs().sum() == 0
    rot_only = AugConfig(hflip=False, vflip=False)
    geoms = torch.stack([random_geom(gen, rot_only) for _ in range(40)])
    assert geoms[:, 1:].abs().sum() == 0
    assert set(geoms[:, 0].tolist()) == {0, 1, 2, 3}
    flips_only = AugConfig(rot90=False)
    geoms = torch.stack([random_geom(gen, flips_only) for _ in range(40)])
    assert geoms[:, 0].abs().sum() == 0
    assert geoms[:, 1].sum() > 0
    assert geoms[:, 2].sum() > 0


@pytest.mark.parametrize("shape", [(8, 8), (6, 10)])
def test_augment_batch_per_item_geometry(shape):
    items = [coded_sample(*shape) for _ in range(3)]
    batch = {key: torch.stack([it[key] for it in items]) for key in ("image", "slic", "target", "valid")}
    batch["meta"] = [it["meta"] for it in items]
    view_a, view_b = augment_batch(batch, torch.Generator().manual_seed(2), AugConfig())
    for view in (view_a, view_b):
        assert view["geom"].shape == (3, 3)
        assert view["geom"].dtype == torch.int64
        assert view["meta"] is batch["meta"]
        if shape[0] != shape[1]:
            assert set(view["geom"][:, 0].tolist()) <= {0, 2}
        for key in ("slic", "target", "valid"):
            assert torch.equal(invert_geom(view[key], view["geom"]), batch[key])
        assert view["image"].shape == batch["image"].shape


def test_illumination_gain_is_smooth_and_bounded():
    gen = torch.Generator().manual_seed(3)
    image = torch.full((3, 64, 64), 0.5)
    valid = torch.ones(64, 64, dtype=torch.bool)
    cfg = AugConfig(noise_std=0.0, contrast=0.0, saturation=0.0, brightness=0.0, illumination=0.2)
    out = photometric(image, valid, gen, cfg)
    gain = out / image
    assert float(gain.min()) >= 0.8 - 1e-6
    assert float(gain.max()) <= 1.2 + 1e-6
    assert float(gain.max() - gain.min()) > 0.02  # it does vary across the image
    torch.testing.assert_close(gain[0], gain[1])  # the same gain on every band: colour ratios kept
    assert float((gain[:, :, 1:] - gain[:, :, :-1]).abs().max()) < 0.05  # smooth: small neighbour steps
