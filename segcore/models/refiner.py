"""Optional learned refiner of the cluster logits (off by default: ``model.refiner``).

Cluster ids are arbitrary per image, so the refiner must not mix clusters with fixed weights: it
runs the *same* small residual conv on every cluster's logit map, guided by a projection of the
embeddings that is shared by all clusters. For each cluster ``k``:

    g = conv1x1(embed)                                # (B, guide_dim, h, w), shared by all k
    x = concat([logits_k, g])                         # (B, 1 + guide_dim, h, w)
    logits_k <- logits_k + conv3x3(relu(conv3x3(x)))  # zero padding 1, biases

The last conv starts near zero, so a fresh refiner is close to the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Refiner(nn.Module):
    """``logits (B, K, h, w)``, ``embed (B, E, h, w)`` -> refined logits ``(B, K, h, w)`` (any ``K``)."""

    def __init__(self, embed_dim: int, guide_dim: int = 8, hidden: int = 16):
        super().__init__()
        self.embed_dim, self.guide_dim, self.hidden = embed_dim, guide_dim, hidden
        self.guide = nn.Conv2d(embed_dim, guide_dim, 1, bias=True)
        self.conv1 = nn.Conv2d(1 + guide_dim, hidden, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(hidden, 1, 3, padding=1, bias=True)
        nn.init.normal_(self.conv2.weight, std=1e-3)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, logits: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        b, k, h, w = logits.shape
        g = self.guide(embed)  # (B, G, h, w)
        g = g[:, None].expand(b, k, self.guide_dim, h, w)  # (B, K, G, h, w)
        x = torch.cat([logits[:, :, None], g], dim=2).reshape(b * k, 1 + self.guide_dim, h, w)
        delta = self.conv2(F.relu(self.conv1(x)))  # (B*K, 1, h, w)
        return logits + delta.reshape(b, k, h, w)
