"""Region vote (numpy): superpixels follow colour edges, votes are region means, windows nearly agree with the whole."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.regions import apply_prior, cell_colours, class_prior, merge_classes, region_vote, superpixels


def two_halves(h: int = 40, w: int = 40, split: int = 17) -> np.ndarray:
    colours = np.zeros((h, w, 3), np.float32)
    colours[:, :split] = (0.9, 0.2, 0.1)
    colours[:, split:] = (0.1, 0.3, 0.8)
    return colours


def test_cell_colours_is_the_block_mean():
    rgb = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    got = cell_colours(rgb, (2, 2))
    expect = rgb.astype(np.float32).reshape(2, 4, 2, 4, 3).mean(axis=(1, 3)) / 255.0
    np.testing.assert_allclose(got, expect, rtol=1e-6)


def test_cell_colours_pads_by_the_edge():
    rgb = np.full((5, 6, 3), 255, np.uint8)
    assert cell_colours(rgb, (2, 2)).shape == (2, 2, 3)
    np.testing.assert_allclose(cell_colours(rgb, (2, 2)), 1.0)


def test_superpixels_never_straddle_a_colour_edge():
    colours = two_halves()
    regions = superpixels(colours, side=8)
    left, right = set(np.unique(regions[:, :17])), set(np.unique(regions[:, 17:]))
    assert not left & right
    assert 15 <= len(left | right) <= 30  # about (40 / 8) ** 2 regions


def test_flat_image_gives_the_seed_grid():
    regions = superpixels(np.full((16, 24, 3), 0.5, np.float32), side=8)
    blocks = (np.arange(16)[:, None] // 8) * 3 + np.arange(24)[None, :] // 8
    assert np.array_equal(regions, blocks)


def test_region_vote_values():
    probs = np.zeros((2, 2, 3), np.float32)
    probs[0] = [[1.0, 0.0, 0.5], [0.2, 0.4, 0.6]]
    probs[1] = 1.0 - probs[0]
    regions = np.array([[0, 0, 1], [2, 2, 1]])
    voted = region_vote(probs, regions)
    np.testing.assert_allclose(voted[0], [[0.5, 0.5, 0.55], [0.3, 0.3, 0.55]], rtol=1e-6)
    np.testing.assert_allclose(voted.sum(0), 1.0, rtol=1e-6)
    valid = np.array([[True, False, True], [True, True, True]])
    np.testing.assert_allclose(region_vote(probs, regions, valid)[0, 0, :2], [1.0, 1.0])


def test_region_vote_flips_a_minority_inside_a_region():
    colours = two_halves()
    probs = np.zeros((2, 40, 40), np.float32)
    probs[0, :, :17], probs[1, :, 17:] = 1.0, 1.0
    noisy = probs.copy()
    rng = np.random.default_rng(0)
    flip = rng.random((40, 40)) < 0.2
    noisy[:, flip] = noisy[::-1][:, flip]
    voted = region_vote(noisy, superpixels(colours, side=8))
    assert (voted.argmax(0) == probs.argmax(0)).mean() == 1.0
    assert (noisy.argmax(0) == probs.argmax(0)).mean() < 0.85


@pytest.mark.parametrize("offset", [(0, 0), (8, 16), (5, 3)])
def test_windows_agree_with_the_whole_away_from_their_edges(offset):
    rng = np.random.default_rng(1)
    colours = np.repeat(np.repeat(rng.random((12, 12, 3)), 8, 0), 8, 1).astype(np.float32)  # 96 x 96 blocks
    colours += rng.normal(0, 0.02, colours.shape).astype(np.float32)
    whole = superpixels(colours, side=6)
    r, c = offset
    window = superpixels(colours[r : r + 60, c : c + 60], side=6, origin=(r, c))
    inner = slice(18, 42)  # three region sides from the window edges
    a, b = whole[r : r + 60, c : c + 60][inner, inner].ravel(), window[inner, inner].ravel()
    # Ids differ between the calls: map each window region to the whole's region it overlaps most.
    joint = np.zeros((a.max() + 1, b.max() + 1), np.int64)
    np.add.at(joint, (a, b), 1)
    agree = joint.max(axis=0).sum() / a.size
    assert agree >= 0.97  # influence spreads a little per iteration, so only nearly equal


def test_class_prior_of_certain_cells_is_their_frequency():
    probs = np.zeros((3, 10))
    probs[0, :6], probs[1, 6:9], probs[2, 9] = 1.0, 1.0, 1.0
    np.testing.assert_allclose(class_prior(probs), [0.6, 0.3, 0.1])


def test_class_prior_rounds_by_hand():
    # 8 cells sure of class 0, 2 undecided: round 1 gives each undecided cell half to each class,
    # shares (8 + 1) / 10 and 1 / 10; round 2 gives them 0.9 / 0.1, shares 0.98 / 0.02.
    probs = np.zeros((2, 10))
    probs[0, :8] = 1.0
    probs[:, 8:] = 0.5
    np.testing.assert_allclose(class_prior(probs, iters=1), [0.9, 0.1])
    np.testing.assert_allclose(class_prior(probs, iters=2), [0.98, 0.02])
    np.testing.assert_allclose(class_prior(probs, iters=0), [0.5, 0.5])
    np.testing.assert_allclose(class_prior(np.zeros((4, 0))), [0.25] * 4)


def test_apply_prior_sends_undecided_cells_to_the_main_class():
    probs = np.array([[0.9, 0.45, 0.15], [0.1, 0.55, 0.85]], np.float32)[:, None, :]  # (K=2, 1, 3)
    out = apply_prior(probs, np.array([0.8, 0.2]))
    assert out.dtype == np.float32
    assert out.shape == probs.shape
    np.testing.assert_allclose(out.sum(0), 1.0, rtol=1e-6)
    assert out.argmax(0).tolist() == [[0, 0, 1]]  # the near-tie flips, the clear minority cell stays
    np.testing.assert_allclose(out[0, 0, 1], 0.36 / (0.36 + 0.11), rtol=1e-6)
    np.testing.assert_allclose(apply_prior(probs, np.array([0.5, 0.5])), probs, rtol=1e-6)


def test_merge_classes_keeps_the_best_row_of_each_group():
    probs = np.array([[0.5, 0.1], [0.2, 0.3], [0.3, 0.6]], np.float32)[:, None, :]  # (K=3, 1, 2)
    out = merge_classes(probs, np.array([1, 0, 1]), 2)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], [[0.2 / 0.7, 0.3 / 0.9], [0.5 / 0.7, 0.6 / 0.9]], rtol=1e-6)
    np.testing.assert_allclose(out.sum(0), 1.0, rtol=1e-6)
    assert merge_classes(probs, None, 3) is probs
