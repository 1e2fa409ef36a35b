import math

import torch

from segcore.augment import apply_geom
from segcore.losses.contrastive import pool_superpixels, superpixel_infonce

IDENTITY = torch.zeros(1, 3, dtype=torch.int64)


def two_region_embed(a, b):
    """(1, 2, 2, 2) embeddings: left column vector ``a``, right column vector ``b``."""
    e = torch.zeros(1, 2, 2, 2)
    e[0, :, :, 0] = torch.tensor(a).view(2, 1)
    e[0, :, :, 1] = torch.tensor(b).view(2, 1)
    return e


SLIC = torch.tensor([[[1, 2], [1, 2]]])  # (1, 2, 2): superpixel 1 left, 2 right


def test_pool_superpixels_means_and_ignores_zero():
    embed = torch.arange(8.0).view(1, 2, 2, 2)
    slic = torch.tensor([[[1, 1], [0, 2]]])
    pooled, keys = pool_superpixels(embed, slic)
    assert keys.tolist() == [1, 2]
    torch.testing.assert_close(pooled, torch.tensor([[0.5, 4.5], [3.0, 7.0]]))


def test_infonce_matches_hand_computation():
    a = two_region_embed([1.0, 0.0], [0.0, 1.0])
    b = two_region_embed([1.0, 0.0], [0.6, 0.8])
    tau = 0.5
    # Pooled and normalised: A = [e1, e2], B = [e1, (0.6, 0.8)]. logits = A @ B.T / tau.
    logits = torch.tensor([[1.0, 0.6], [0.0, 0.8]]) / tau
    ce_rows = -(torch.log_softmax(logits, 1).diagonal()).mean()
    ce_cols = -(torch.log_softmax(logits.T, 1).diagonal()).mean()
    expected = 0.5 * (ce_rows + ce_cols)
    got = superpixel_infonce(a, b, SLIC, IDENTITY, IDENTITY, tau)
    torch.testing.assert_close(got, expected)


def test_infonce_falls_when_views_agree_and_regions_differ():
    a = two_region_embed([1.0, 0.0], [0.0, 1.0])
    agree = superpixel_infonce(a, a.clone(), SLIC, IDENTITY, IDENTITY, 0.1)
    swapped = superpixel_infonce(a, two_region_embed([0.0, 1.0], [1.0, 0.0]), SLIC, IDENTITY, IDENTITY, 0.1)
    assert float(agree) < 0.01 < float(swapped)
    assert math.isclose(float(swapped), 10.0, rel_tol=1e-3)  # each positive is 1/tau below its negative


def test_infonce_maps_views_back_through_their_geometry():
    a = two_region_embed([1.0, 0.0], [0.0, 1.0])
    geom_b = torch.tensor([[0, 1, 0]])  # view B is view A flipped left-right
    b = apply_geom(a, geom_b)
    aligned = superpixel_infonce(a, b, SLIC, IDENTITY, geom_b, 0.1)
    assert float(aligned) < 0.01


def test_infonce_gradient_pulls_positives_together():
    a = two_region_embed([1.0, 0.0], [0.0, 1.0])
    b = two_region_embed([0.8, 0.6], [0.6, 0.8]).requires_grad_(True)
    superpixel_infonce(a, b, SLIC, IDENTITY, IDENTITY, 0.2).backward()
    # Moving B's left region towards e1 (its positive) lowers the loss: the gradient points away.
    assert float(b.grad[0, 0, 0, 0]) < 0
    assert float(b.grad[0, 1, 0, 0]) > 0
