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


def test_neighbour_targets_share_half_with_nearest_of_other_images():
    from segcore.losses.contrastive import MAX_SEGMENTS, neighbour_targets

    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9], [0.95, 0.05]])
    keys = torch.tensor([1, 2, MAX_SEGMENTS + 1, MAX_SEGMENTS + 2, 2 * MAX_SEGMENTS + 1])  # images 0, 0, 1, 1, 2
    target = neighbour_targets(z, z, keys, 1)
    torch.testing.assert_close(target.sum(1), torch.ones(5))
    torch.testing.assert_close(target.diagonal(), torch.full((5,), 0.5))
    # Row 0 (image 0, "red") takes the nearest red of the other images: image 2's (0.95), not
    # image 1's (0.9); a superpixel of its own image is never a neighbour.
    assert target[0].nonzero().flatten().tolist() == [0, 4]
    assert target[1].nonzero().flatten().tolist() == [1, 3]
    assert target[4].nonzero().flatten().tolist() == [0, 4]
    # An identical superpixel of the same image is still not a neighbour.
    same = neighbour_targets(z[[0, 0, 1]], z[[0, 0, 1]], keys[[0, 1, 2]], 1)
    assert same[0].nonzero().flatten().tolist() == [0, 2]
    # One image only: nothing to share, the plain InfoNCE targets.
    torch.testing.assert_close(neighbour_targets(z[:2], z[:2], keys[:2], 3), torch.eye(2))


def test_infonce_neighbours_pull_look_alikes_of_other_images_together():
    # Two images, each a red-ish and a green-ish region; image 1's regions are near image 0's.
    a = torch.cat([two_region_embed([1.0, 0.0], [0.0, 1.0]), two_region_embed([0.8, 0.6], [0.6, 0.8])])
    slic = SLIC.expand(2, -1, -1)
    geom = IDENTITY.expand(2, -1)
    grads = []
    for n in (0, 1):
        b = a.clone().requires_grad_(True)
        superpixel_infonce(a, b, slic, geom, geom, 0.2, neighbours=n).backward()
        grads.append(b.grad[1, :, 0, 0])  # image 1's red region in view B
    # Plain InfoNCE holds it near its own other view (image 0's red is only a negative: the descent
    # step barely moves it towards e1); with one neighbour half its target is image 0's red, and the
    # descent step pulls it towards e1 many times harder.
    pull_plain, pull_neighbour = float(-grads[0][0]), float(-grads[1][0])
    assert pull_neighbour > 0
    assert pull_neighbour > 5 * abs(pull_plain)
