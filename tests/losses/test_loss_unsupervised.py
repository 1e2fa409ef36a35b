"""Consistency, entropy shaping and edge-aware smoothness against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from segcore.augment import apply_geom
from segcore.losses.unsupervised import (
    consistency_loss,
    edge_weights,
    entropy_loss,
    marginal_loss,
    smoothness_loss,
    stride4_image,
    symmetric_kl,
)


def two_pixel_probs(a: float, b: float) -> torch.Tensor:
    """(1, 2, 1, 2): pixel 0 = (a, 1-a), pixel 1 = (b, 1-b)."""
    return torch.tensor([[[[a, b]], [[1 - a, 1 - b]]]])


def test_symmetric_kl_hand_value_and_mask():
    p, q = two_pixel_probs(0.5, 0.9), two_pixel_probs(0.25, 0.9)
    # pixel 0: 0.5 * [(0.25) ln(2) + (-0.25) ln(0.5/0.75)]; pixel 1: 0
    px0 = 0.5 * (0.25 * math.log(2.0) - 0.25 * math.log(0.5 / 0.75))
    assert symmetric_kl(p, q).item() == pytest.approx(px0 / 2)
    assert symmetric_kl(p, q, torch.tensor([[[True, False]]])).item() == pytest.approx(px0)
    assert symmetric_kl(p, q, torch.tensor([[[False, True]]])).item() == pytest.approx(0.0)


def test_consistency_maps_views_back_and_falls_when_views_agree():
    g = torch.Generator().manual_seed(0)
    canon = torch.softmax(torch.randn(2, 3, 4, 4, generator=g), 1)
    geom_a, geom_b = torch.tensor([[1, 0, 1], [0, 1, 0]]), torch.tensor([[3, 1, 1], [2, 0, 0]])
    view_a, view_b = apply_geom(canon, geom_a), apply_geom(canon, geom_b)
    assert consistency_loss(view_a, view_b, geom_a, geom_b).item() == pytest.approx(0.0, abs=1e-7)
    # compared without the geometry, the same maps disagree
    assert symmetric_kl(view_a, view_b).item() > 1e-3
    # gradient sign: moving view B toward view A lowers the loss
    logits_b = apply_geom(torch.randn(2, 3, 4, 4, generator=g), geom_b).requires_grad_(True)
    loss = consistency_loss(view_a, torch.softmax(logits_b, 1), geom_a, geom_b)
    loss.backward()
    stepped = torch.softmax(logits_b.detach() - 0.5 * logits_b.grad, 1)
    assert consistency_loss(view_a, stepped, geom_a, geom_b) < loss


def test_entropy_hand_values():
    p = two_pixel_probs(0.5, 1.0)
    assert entropy_loss(p).item() == pytest.approx(math.log(2) / 2, abs=1e-6)
    assert entropy_loss(p, torch.tensor([[[False, True]]])).item() == pytest.approx(0.0, abs=1e-6)


def test_marginal_is_negative_entropy_of_mean_and_falls_with_even_use():
    skewed = two_pixel_probs(1.0, 1.0)  # cluster 0 only
    even = two_pixel_probs(1.0, 0.0)  # each cluster once
    assert marginal_loss(skewed).item() == pytest.approx(0.0, abs=1e-6)
    assert marginal_loss(even).item() == pytest.approx(-math.log(2), abs=1e-6)
    p = two_pixel_probs(0.8, 0.6)  # mean (0.7, 0.3)
    assert marginal_loss(p).item() == pytest.approx(0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    logits = torch.logit(torch.tensor([0.8, 0.6])).requires_grad_(True)
    probs = torch.stack([torch.sigmoid(logits), 1 - torch.sigmoid(logits)]).view(1, 2, 1, 2)
    marginal_loss(probs).backward()
    assert (logits.grad > 0).all()  # descent lowers p(cluster 0), evening out the marginal


def test_edge_aware_smoothness_hand_value():
    image = torch.zeros(1, 3, 4, 8)
    image[..., 4:] = 0.5  # an edge between the two stride-4 cells
    probs = two_pixel_probs(1.0, 0.0)  # (1, 2, 1, 2): the cells disagree completely
    assert stride4_image(image)[0, 0, 0].tolist() == [0.0, 0.5]
    wx, wy = edge_weights(stride4_image(image), sigma=0.1)
    assert wx.item() == pytest.approx(math.exp(-5.0))
    assert wy.numel() == 0
    # one horizontal pair, L1 difference 2, weighted down by the edge
    assert smoothness_loss(probs, image, 0.1).item() == pytest.approx(2 * math.exp(-5.0))
    assert smoothness_loss(probs, torch.zeros_like(image), 0.1).item() == pytest.approx(2.0)
    masked = smoothness_loss(probs, image, 0.1, torch.tensor([[[True, False]]]))
    assert masked.item() == pytest.approx(0.0)
