"""Swapped prototype prediction: Sinkhorn codes, the loss by hand, the queue, gradients."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from segcore.losses.prototypes import RegionPrototypes, sinkhorn_codes, swapped_prototype_loss

IDENTITY = torch.zeros(1, 3, dtype=torch.int64)


def test_sinkhorn_codes_are_distributions_spread_evenly_over_prototypes():
    # Five rows prefer prototype 0, one prefers prototype 1: the codes still give each about half the mass.
    scores = torch.tensor([[0.9, 0.1]] * 5 + [[0.1, 0.9]])
    q = sinkhorn_codes(scores, iters=50)
    torch.testing.assert_close(q.sum(1), torch.ones(6))
    torch.testing.assert_close(q.sum(0), torch.full((2,), 3.0), atol=1e-3, rtol=0)
    assert q[5, 1] > 0.99  # the odd row keeps its own prototype
    assert (q[:5, 0] > q[5, 0]).all()


def test_loss_matches_hand_computation():
    za = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    zb = torch.tensor([[0.6, 0.8], [0.8, -0.6]])
    c = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # normalised inside: e1, e2
    tau = 0.5
    cn = F.normalize(c, dim=1)
    sa, sb = za @ cn.T, zb @ cn.T
    qa, qb = sinkhorn_codes(sa), sinkhorn_codes(sb)
    ce_a = -(qb * torch.log_softmax(sa / tau, 1)).sum(1).mean()
    ce_b = -(qa * torch.log_softmax(sb / tau, 1)).sum(1).mean()
    expected = 0.5 * (ce_a + ce_b)
    torch.testing.assert_close(swapped_prototype_loss(za, zb, c, tau), expected)


def test_loss_is_low_when_views_share_prototypes_and_high_when_swapped():
    c = torch.eye(2)
    za = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    agree = swapped_prototype_loss(za, za.clone(), c, tau=0.1)
    swapped = swapped_prototype_loss(za, za.flip(0), c, tau=0.1)
    assert float(agree) < 0.01
    assert math.isclose(float(swapped), 10.0, rel_tol=1e-3)  # each wrong prototype costs 1/tau


def test_queue_joins_the_spread_without_rows_in_the_loss():
    # Both batch rows lean to prototype 0; a queue full of prototype-0 regions makes the even spread
    # send the batch's mass to prototype 1, so the queue changes the targets (and so the loss).
    c = torch.eye(2)
    z = F.normalize(torch.tensor([[1.0, 0.3], [1.0, 0.5]]), dim=1)
    queue = torch.tensor([[1.0, 0.0]] * 8)
    alone = swapped_prototype_loss(z, z, c, tau=0.1)
    with_queue = swapped_prototype_loss(z, z, c, tau=0.1, queue=queue)
    assert float(with_queue) > float(alone) + 1.0


def embed_pair():
    """(1, 2, 2, 2): left superpixel along e1, right along e2; SLIC ids 1 (left) and 2 (right)."""
    e = torch.zeros(1, 2, 2, 2)
    e[0, 0, :, 0] = 1.0
    e[0, 1, :, 1] = 1.0
    return e, torch.tensor([[[1, 2], [1, 2]]])


def test_module_fills_its_queue_first_in_first_out_only_in_training():
    torch.manual_seed(0)
    module = RegionPrototypes(2, k=2, tau=0.1, queue_size=3)
    embed, slic = embed_pair()
    module(embed, embed.clone(), slic, IDENTITY, IDENTITY)
    assert int(module.queue_filled) == 2
    torch.testing.assert_close(module.queue[:2], torch.eye(2))
    module(embed.flip(-1), embed.flip(-1), slic, IDENTITY, IDENTITY)  # now left = e2, right = e1
    assert int(module.queue_filled) == 3
    torch.testing.assert_close(module.queue, torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]))
    module.eval()
    module(embed, embed, slic, IDENTITY, IDENTITY)
    torch.testing.assert_close(module.queue, torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]))


def test_gradient_moves_prototypes_and_embeddings():
    torch.manual_seed(0)
    module = RegionPrototypes(2, k=2, tau=0.1, queue_size=0)
    embed, slic = embed_pair()
    embed_b = (embed + 0.3 * embed.flip(1)).requires_grad_(True)
    loss = module(embed, embed_b, slic, IDENTITY, IDENTITY)
    loss.backward()
    assert module.prototypes.grad is not None
    assert module.prototypes.grad.abs().sum() > 0
    assert embed_b.grad.abs().sum() > 0
    assert int(module.queue_filled) == 0  # no queue to fill
