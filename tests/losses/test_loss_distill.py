"""Feature, affinity and clustering-shaping losses against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from segcore.losses.distill import affinity_loss, cluster_loss, feature_loss, sample_pairs, sharpened_target


def test_feature_loss_hand_value_and_resampling():
    s = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    t = torch.tensor([1.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, 1, 1)  # 1x1 teacher map, resampled to 2x2
    assert feature_loss(s, t).item() == pytest.approx(1 - 2**-0.5)
    assert feature_loss(s, 3.0 * s).item() == pytest.approx(0.0, abs=1e-7)


def test_affinity_loss_hand_value_and_determinism():
    # student: pixels 0, 1 identical, 2 orthogonal; teacher: all identical
    student = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).view(1, 2, 1, 3)
    teacher = torch.ones(1, 4, 1, 3)
    i, j = sample_pairs(None, 1, 3, 5000, torch.Generator().manual_seed(0), "cpu")
    expected = ((i == 2) ^ (j == 2)).float().mean().item()  # student cos is 0 exactly for those pairs
    got = affinity_loss(student, teacher, 5000, torch.Generator().manual_seed(0))
    assert got.item() == pytest.approx(expected)
    assert expected == pytest.approx(4 / 9, abs=0.03)
    again = affinity_loss(student, teacher, 5000, torch.Generator().manual_seed(0))
    assert got.item() == again.item()


def test_pairs_come_from_valid_pixels_only():
    mask = torch.tensor([[[False, True, False, True]]])
    i, j = sample_pairs(mask, 1, 4, 200, torch.Generator().manual_seed(1), "cpu")
    assert set(i.unique().tolist()) | set(j.unique().tolist()) == {1, 3}


def test_sharpened_target_and_cluster_loss_hand_values():
    p = torch.tensor([[0.8, 0.4], [0.2, 0.6]]).view(1, 2, 1, 2)  # pixel 0 (0.8, 0.2), pixel 1 (0.4, 0.6)
    f0, f1 = 1.2, 0.8
    q00 = (0.64 / f0) / (0.64 / f0 + 0.04 / f1)
    q01 = (0.16 / f0) / (0.16 / f0 + 0.36 / f1)
    q = sharpened_target(p)
    torch.testing.assert_close(q[0, 0, 0], torch.tensor([q00, q01]))
    ce0 = -(q00 * torch.tensor(0.8).log() + (1 - q00) * torch.tensor(0.2).log())
    ce1 = -(q01 * torch.tensor(0.4).log() + (1 - q01) * torch.tensor(0.6).log())
    assert cluster_loss(p).item() == pytest.approx(((ce0 + ce1) / 2).item(), rel=1e-5)
    logits = torch.tensor([[0.3, 0.1], [0.0, 0.2]]).view(1, 2, 1, 2).requires_grad_(True)
    cluster_loss(torch.softmax(logits, 1)).backward()
    assert not torch.isnan(logits.grad).any()
    assert sharpened_target(torch.softmax(logits, 1)).requires_grad is False
