"""Tiny reconstruction decoder: stride-4 embeddings -> stride-4 RGB. Training only, never exported."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segcore.models.student import make_norm


class TinyReconDecoder(nn.Module):
    """``embed (B, E, h, w)`` -> ``rgb (B, 3, h, w)`` in 0..1 (sigmoid).

    conv3x3(E -> hidden) + GroupNorm + ReLU, then conv3x3(hidden -> 3) + sigmoid.
    """

    def __init__(self, embed_dim: int, hidden: int = 32, groups: int = 8):
        super().__init__()
        self.embed_dim, self.hidden = embed_dim, hidden
        self.conv1 = nn.Conv2d(embed_dim, hidden, 3, padding=1, bias=True)
        self.norm1 = make_norm("group", hidden, groups)
        self.conv2 = nn.Conv2d(hidden, 3, 3, padding=1, bias=True)

    def forward(self, embed: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(embed)))  # (B, hidden, h, w)
        return torch.sigmoid(self.conv2(x))  # (B, 3, h, w)
