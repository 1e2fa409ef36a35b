"""Matched/majority IoU against hand-computed confusions, proxy metrics on constructed maps, k-means."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segcore.metrics import (
    MatchedIoU,
    PooledIoU,
    ProxyMetrics,
    boundary_density,
    cluster_utilization,
    iou_per_class,
    kmeans_rgb_labels,
    majority_confusion,
    matched_confusion,
    scores,
    speckle,
    two_view_consistency,
)

# 3 x 3, three classes. Hand matching: segment 7 -> class 1 (3 px), 9 -> 2 (2 px), 4 -> 3 (2 px).
T3 = np.array([[1, 1, 2], [1, 2, 2], [3, 3, 3]])
P3 = np.array([[7, 7, 9], [7, 7, 9], [4, 4, 9]])
# conf[p, t]; row/column 0 = unmatched / ignore.
C3 = np.array([[0, 0, 0, 0], [0, 3, 1, 0], [0, 0, 2, 1], [0, 0, 0, 2]])

# 4 x 4, two classes, last row ignored; segments a=5 and c=8 both overlap class 1 by 3 px, b=6 is class 2.
T4 = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0]])
P4 = np.array([[5, 5, 6, 6], [5, 8, 6, 6], [8, 8, 6, 6], [5, 5, 5, 5]])


def test_matched_confusion_hand_example():
    conf = matched_confusion(P3, T3, 3)
    np.testing.assert_array_equal(conf, C3)
    np.testing.assert_allclose(iou_per_class(conf), [3 / 4, 2 / 4, 2 / 3])
    s = scores(conf)
    assert s["miou"] == pytest.approx((3 / 4 + 2 / 4 + 2 / 3) / 3)
    assert s["pixel_acc"] == pytest.approx(7 / 9)
    assert s["iou/2"] == pytest.approx(0.5)


@pytest.mark.parametrize("perm", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_permuted_segment_ids_score_the_same(perm):
    relabel = {7: perm[0] - 3, 9: perm[1] * 100, 4: perm[2]}  # any ints, negative included
    pred = np.vectorize(relabel.get)(P3)
    np.testing.assert_array_equal(matched_confusion(pred, T3, 3), C3)


def test_unmatched_segments_count_as_errors_and_ignored_pixels_do_not_count():
    conf = matched_confusion(P4, T4, 2)
    # One of the tied segments 5/8 is matched to class 1, the other (3 px of class 1) is unmatched.
    expected = np.array([[0, 3, 0], [0, 3, 0], [0, 0, 6]])
    np.testing.assert_array_equal(conf, expected)
    np.testing.assert_allclose(iou_per_class(conf), [3 / 6, 1.0])
    metric = MatchedIoU(2)
    metric.update(P4, T4)
    out = metric.compute()
    assert out["miou"] == pytest.approx(0.75)
    assert out["pixel_acc"] == pytest.approx(9 / 12)
    assert out["unmatched_frac"] == pytest.approx(3 / 12)
    # many-to-one: both 5 and 8 go to class 1 -> perfect
    np.testing.assert_array_equal(majority_confusion(P4, T4, 2), [[0, 0, 0], [0, 6, 0], [0, 0, 6]])
    assert out["majority/miou"] == pytest.approx(1.0)
    # whatever sits on ignored pixels changes nothing
    pred = P4.copy()
    pred[3] = [6, 99, -1, 8]
    np.testing.assert_array_equal(matched_confusion(pred, T4, 2), expected)


def test_fewer_segments_than_classes():
    target = np.array([[1, 1, 1], [1, 1, 2], [2, 2, 0]])
    pred = np.zeros((3, 3), dtype=int)
    conf = matched_confusion(pred, target, 2)
    np.testing.assert_array_equal(conf, [[0, 0, 0], [0, 5, 3], [0, 0, 0]])
    s = scores(conf)
    assert s["iou/1"] == pytest.approx(5 / 8)
    assert s["iou/2"] == pytest.approx(0.0)
    assert s["miou"] == pytest.approx(5 / 16)


def test_segment_matched_to_an_absent_class_is_a_false_positive():
    target = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])
    pred = np.array([[0, 0, 1, 1], [0, 2, 1, 1]])  # segment 2 overlaps class 1 only by 1 px
    conf = matched_confusion(pred, target, 3)
    # 0 -> class 1 (3 px), 1 -> class 2 (4 px), 2 -> class 3 (absent): its pixel is an error
    np.testing.assert_array_equal(conf, [[0, 0, 0, 0], [0, 3, 0, 0], [0, 0, 4, 0], [0, 1, 0, 0]])
    s = scores(conf)
    assert "iou/3" not in s
    assert s["miou"] == pytest.approx((3 / 4 + 1.0) / 2)
    assert s["pixel_acc"] == pytest.approx(7 / 8)


def test_accumulator_sums_confusions_over_images():
    metric = MatchedIoU(3)
    metric.update(P3, T3)
    second = np.array([[1, 1, 3], [3, 3, 3], [2, 2, 2]])
    metric.update(np.ones((3, 3), int), second)  # one segment: matched to class 3 (4 of its 9 px)
    extra = np.zeros((4, 4), int)
    extra[3, 1:] = [2, 3, 4]
    np.testing.assert_array_equal(metric.confusion, C3 + extra)
    assert metric.compute()["pixel_acc"] == pytest.approx((7 + 4) / 18)
    metric.reset()
    assert metric.confusion.sum() == 0


def test_pooled_matching_is_one_legend_for_the_split():
    # Two 2 x 2 images of classes 1 (left) and 2 (right). Model A swaps its ids between the images:
    # perfect per image, but one matching for the split gets half of the pixels.
    t = np.array([[1, 2], [1, 2]])
    a1, a2 = np.array([[0, 1], [0, 1]]), np.array([[1, 0], [1, 0]])
    per_image, pooled = MatchedIoU(2), PooledIoU(3, 2)
    for pred in (a1, a2):
        per_image.update(pred, t)
        pooled.update(pred, t)
    assert per_image.compute()["miou"] == 1.0
    # Overlap of id 0: 2 px of class 1, 2 of class 2; id 1 the same: ids 0 -> 1, 1 -> 2 (a tie,
    # either way): TP 2 + 2 of 8 -> class IoU 2 / 6 each.
    np.testing.assert_array_equal(pooled.overlap, [[2, 2], [2, 2], [0, 0]])
    m = pooled.compute()
    assert m["pixel_acc"] == pytest.approx(4 / 8)
    assert m["miou"] == pytest.approx(2 / 6)
    # One id per image (a constant): id 0 over [1 1 2 2], id 2 over [1 1 2] (one pixel ignored).
    # The best single matching is id 0 -> class 2, id 2 -> class 1 (2 + 2 px of 7).
    constant = PooledIoU(3, 2)
    constant.update(np.zeros((2, 2), int), t)
    constant.update(np.full((2, 2), 2), np.array([[1, 1], [0, 2]]))
    np.testing.assert_array_equal(constant.confusion(), [[0, 0, 0], [0, 2, 1], [0, 2, 2]])
    assert constant.compute()["pixel_acc"] == pytest.approx(4 / 7)
    # Ids that keep their class everywhere score 1.
    good = PooledIoU(2, 2)
    good.update(a1, t)
    good.update(a1, t)
    assert good.compute()["miou"] == 1.0
    with pytest.raises(ValueError, match=r"ids must be in 0\.\.1"):
        good.update(np.full((2, 2), 2), t)


def test_majority_tie_goes_to_lowest_class():
    conf = majority_confusion(np.zeros((1, 2)), np.array([[2, 1]]), 2)
    np.testing.assert_array_equal(conf, [[0, 0, 0], [0, 1, 1], [0, 0, 0]])


def test_shape_and_class_range_errors():
    with pytest.raises(ValueError, match="shape"):
        matched_confusion(np.zeros((2, 2)), np.zeros((2, 3)), 2)
    with pytest.raises(ValueError, match="num_classes"):
        matched_confusion(np.zeros((1, 2)), np.array([[1, 5]]), 2)


@pytest.mark.parametrize(
    ("labels", "k", "expected"),
    [
        (np.array([[0, 1], [2, 3]]), 4, 1.0),
        (np.array([[0, 1], [2, 3]]), 8, math.log(4) / math.log(8)),
        (np.zeros((3, 3), int), 4, 0.0),
        (np.array([[0, 0], [0, 1]]), 2, -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)),
    ],
)
def test_cluster_utilization(labels, k, expected):
    assert cluster_utilization(labels, k) == pytest.approx(expected)


def test_cluster_utilization_valid_and_errors():
    labels = np.array([[0, 1], [0, 0]])
    assert cluster_utilization(labels, 2, valid=np.array([[True, True], [False, False]])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="more than k"):
        cluster_utilization(np.arange(3), 2)


def test_speckle():
    labels = np.zeros((4, 4), int)
    labels[1, 2] = 1  # isolated pixel
    labels[2:, :2] = 2  # 2 x 2 block
    assert speckle(labels, 2) == pytest.approx(1 / 16)
    assert speckle(labels, 5) == pytest.approx(5 / 16)
    assert speckle(labels, 12) == pytest.approx(1.0)  # background component has 11 px
    # diagonal neighbours are not 4-connected: a checkerboard is all speckle
    checker = np.indices((4, 4)).sum(0) % 2
    assert speckle(checker, 2) == pytest.approx(1.0)
    assert speckle(np.ones((3, 3), int), 9) == pytest.approx(0.0)


def test_boundary_density():
    halves = np.zeros((4, 4), int)
    halves[:, 2:] = 1
    assert boundary_density(halves) == pytest.approx(8 / 16)
    assert boundary_density(np.full((5, 3), 7)) == pytest.approx(0.0)
    assert boundary_density(np.indices((4, 4)).sum(0) % 2) == pytest.approx(1.0)
    corner = np.zeros((3, 3), int)
    corner[0, 0] = 1
    assert boundary_density(corner) == pytest.approx(3 / 9)  # the pixel and its two neighbours


def test_two_view_consistency():
    a = np.array([[0, 1], [2, 3]])
    b = np.array([[0, 1], [2, 0]])
    assert two_view_consistency(a, b) == pytest.approx(0.75)
    assert two_view_consistency(a, b, valid=np.array([[True, False], [False, True]])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shape"):
        two_view_consistency(a, b.T[:1])


def test_proxy_metrics_average_per_image():
    proxy = ProxyMetrics(k=2, min_size=2)
    halves = np.zeros((4, 4), int)
    halves[:, 2:] = 1
    first = proxy.update(halves)
    assert first == {"proxy/utilization": 1.0, "proxy/speckle": 0.0, "proxy/boundary_density": 0.5}
    proxy.update(np.zeros((4, 4), int))
    out = proxy.compute()
    assert out["proxy/utilization"] == pytest.approx(0.5)
    assert out["proxy/speckle"] == pytest.approx(0.0)
    assert out["proxy/boundary_density"] == pytest.approx(0.25)


def two_blob_image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros((20, 30, 3))
    image[:, :15] = (200, 30, 40)
    image[:, 15:] = (30, 40, 190)
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def test_kmeans_recovers_two_colour_blobs():
    image = two_blob_image(0)
    labels = kmeans_rgb_labels(image, 2, seed=0)
    assert labels.dtype == np.int64
    assert len(np.unique(labels[:, :15])) == 1
    assert len(np.unique(labels[:, 15:])) == 1
    assert labels[0, 0] != labels[0, 29]
    np.testing.assert_array_equal(kmeans_rgb_labels(image, 2, seed=0), labels)  # deterministic
    # fitting on a subsample still assigns every pixel
    sub = kmeans_rgb_labels(image, 2, seed=1, max_fit_pixels=50)
    assert matched_confusion(sub, (np.arange(30) >= 15)[None].repeat(20, 0) + 1, 2)[[1, 2], [1, 2]].sum() == 600


def test_kmeans_marks_invalid_pixels():
    image = two_blob_image(1)
    valid = np.ones((20, 30), bool)
    valid[:5] = False
    labels = kmeans_rgb_labels(image, 2, seed=0, valid=valid)
    assert np.all(labels[:5] == -1)
    assert set(np.unique(labels[5:]).tolist()) == {0, 1}
