"""Tiny reconstruction decoder: stride-4 embeddings -> stride-4 RGB. Training only, never exported."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyReconDecoder(nn.Module):
    """``embed (B, E, h, w)`` -> ``rgb (B, 3, h, w)`` in 0..1 (sigmoid).

    conv3x3(E -> hidden) + ReLU, then conv3x3(hidden -> 3) + sigmoid. No normalisation on purpose:
    a norm layer would rescale arbitrarily small embedding differences, letting the embeddings
    collapse to one direction while the reconstruction still succeeds.
    """

    def __init__(self, embed_dim: int, hidden: int = 32):
        super().__init__()
        self.embed_dim, self.hidden = embed_dim, hidden
        self.conv1 = nn.Conv2d(embed_dim, hidden, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(hidden, 3, 3, padding=1, bias=True)

    def forward(self, embed: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(embed))  # (B, hidden, h, w)
        return torch.sigmoid(self.conv2(x))  # (B, 3, h, w)
