"""A deterministic frozen random-conv teacher for tests and offline runs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segcore.models.student import RGB_MEAN, RGB_STD, pad_to_multiple
from segcore.teachers.base import Teacher


class FakeTeacher(Teacher):
    """Frozen random features: conv3x3 s2 (3->32) -> ReLU -> conv3x3 s2 (32->feat_dim), on the normalised image.

    Weights are drawn from ``torch.Generator().manual_seed(seed)`` (He-normal), so the same
    ``(feat_dim, seed)`` gives the same features in any process. ``(B, 3, H, W)`` ->
    ``(B, feat_dim, ceil(H/4), ceil(W/4))``.
    """

    def __init__(self, feat_dim: int = 384, seed: int = 0, hidden: int = 32):
        super().__init__()
        self.feat_dim, self.seed = feat_dim, seed
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, hidden, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(hidden, feat_dim, 3, stride=2, padding=1)
        for conv in (self.conv1, self.conv2):
            fan_in = conv.in_channels * 9
            conv.weight.data = torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5
            conv.bias.data = torch.randn(conv.bias.shape, generator=g) * 0.1
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(RGB_STD).view(1, 3, 1, 1))
        self.freeze()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = pad_to_multiple((images.float() - self.mean) / self.std)  # (B, 3, 4h, 4w)
        return self.conv2(F.relu(self.conv1(x)))  # (B, D, h, w)
