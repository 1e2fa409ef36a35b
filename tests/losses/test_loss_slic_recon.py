"""SLIC priors, edge-aware TV and reconstruction against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from segcore.losses.recon import gaussian_kernel1d, recon_losses, recon_target, sobel_magnitude
from segcore.losses.slic_prior import (
    adjacent_pairs,
    edge_aware_tv,
    edge_strength,
    slic_pull_loss,
    slic_push_loss,
    stride4_ids,
    superpixel_stats,
)


def test_stride4_ids_takes_top_left_pixel():
    slic = torch.arange(64).view(1, 8, 8)
    assert stride4_ids(slic, 2, 2).tolist() == [[[0, 4], [32, 36]]]


def test_pull_hand_value():
    z = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 2, 1, 3)  # (1,0) (0,1) (1,0)
    slic = torch.tensor([1, 1, 2]).repeat_interleave(4).view(1, 1, 12).expand(1, 4, 12)
    # superpixel 1: mean direction (1,1)/sqrt2, cos 0.707 for both pixels; superpixel 2: cos 1
    expected = (2 * (1 - 2**-0.5) + 0) / 3
    assert slic_pull_loss(z, slic).item() == pytest.approx(expected)
    slic0 = slic.clone()
    slic0[..., 8:] = 0  # id 0 is ignored
    assert slic_pull_loss(z, slic0).item() == pytest.approx(1 - 2**-0.5)


def test_adjacent_pairs_unique_and_ignore_zero():
    ids = torch.tensor([[[1, 1, 2], [3, 0, 2]]])
    bi, a, b = adjacent_pairs(ids)
    assert list(zip(bi.tolist(), a.tolist(), b.tolist(), strict=True)) == [(0, 1, 2), (0, 1, 3)]


def test_superpixel_stats_and_edge_strength_texture_only():
    image = torch.full((1, 3, 2, 4), 0.5)
    image[0, :, 0, 2], image[0, :, 1, 2] = 0.4, 0.6  # superpixel 2 textured: intensities .4 .6 .5 .5
    slic = torch.tensor([[[1, 1, 2, 2], [1, 1, 2, 2]]])
    colour, std = superpixel_stats(image, slic, 3)
    torch.testing.assert_close(colour[0, 1:], torch.full((2, 3), 0.5))
    torch.testing.assert_close(std[0, 1:], torch.tensor([0.0, math.sqrt(0.005)]))
    e = edge_strength(colour[0, 1:2], colour[0, 2:3], std[0, 1:2], std[0, 2:3], 0.1, 0.03)
    assert e.item() == pytest.approx(1 - math.exp(-((math.sqrt(0.005) / 0.03) ** 2)), rel=1e-5)
    assert e.item() > 0.99  # same colour, different texture: a strong edge


def test_push_hand_value():
    z = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).view(1, 2, 1, 2)  # both superpixels point the same way
    slic = torch.tensor([1, 2]).repeat_interleave(4).view(1, 1, 8).expand(1, 4, 8)
    image = torch.zeros(1, 3, 4, 8)
    image[..., 4:] = 0.1  # colour step 0.1 * sqrt(3) between the superpixels
    strength = 1 - math.exp(-((0.1 * math.sqrt(3) / 0.1) ** 2))
    assert slic_push_loss(z, slic, image, margin=0.5).item() == pytest.approx(0.5 * strength, rel=1e-5)
    orth = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    assert slic_push_loss(orth, slic, image, margin=0.5).item() == pytest.approx(0.0)
    one = torch.ones(1, 4, 8, dtype=torch.long)
    assert slic_push_loss(z, one, image, margin=0.5).item() == 0.0  # no adjacent pair


def test_edge_aware_tv_hand_value():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    image = torch.zeros(1, 3, 4, 8)
    assert edge_aware_tv(z, image, 0.1).item() == pytest.approx(2.0)


def test_gaussian_and_recon_target():
    k = gaussian_kernel1d(1.0)
    assert len(k) == 7
    assert k.sum().item() == pytest.approx(1.0)
    flat = torch.full((1, 3, 9, 10), 0.3)
    target = recon_target(flat, 1.0)
    assert target.shape == (1, 3, 3, 3)
    torch.testing.assert_close(target, torch.full((1, 3, 3, 3), 0.3))
    # sigma 0: plain sampling at the cell centres = mean of pixels (4i+1, 4i+2) per axis
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 3, 4, 8)
    assert recon_target(ramp, 0.0)[0, 0, 0].tolist() == [1.5, 5.5]


def test_sobel_and_recon_losses_hand_values():
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 3, 4)
    mag = sobel_magnitude(ramp)
    # interior: gx = 2*(1) * 4 = 8 (sum of weights 1,2,1 times difference 2); replicate edge: 4
    assert mag[0, 0, 1].tolist() == pytest.approx([4.0, 8.0, 8.0, 4.0], abs=1e-5)
    image = torch.full((1, 3, 8, 8), 0.5)
    pred = torch.full((1, 3, 2, 2), 0.25)
    out = recon_losses(pred, image, 1.0)
    assert out["recon"].item() == pytest.approx(0.25)
    assert out["recon_grad"].item() == pytest.approx(0.0, abs=1e-5)
