"""Swapped prototype prediction: regions of every image are assigned to one set of learnt prototypes.

The superpixel InfoNCE and the descriptor affinity compare regions within one batch of four crops,
so nothing asks a field in one scene and a field in another, never in the same batch, to sit in the
same place of the embedding. A dataset legend (one codebook for every raster) needs exactly that.
Here ``K`` prototypes (unit vectors, learnt with the network) are shared by every batch, and each
region of one view must predict which prototype its other view belongs to (SwAV, Caron et al. 2020,
at the level of superpixels):

    loss = -0.5 * mean_i( sum_k q^b_ik log p^a_ik + q^a_ik log p^b_ik ),   p = softmax(z . c / tau)

The codes ``q`` come from the prototype scores by a few Sinkhorn-Knopp iterations, which spread the
regions evenly over the prototypes: without that, every region takes the same prototype and the
loss is zero. Four crops hold a few land covers only, so the even spread is taken over the batch
*and* a queue of recent regions (detached, from earlier steps) and only the batch's rows are kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segcore.losses.contrastive import pool_views

SINKHORN_EPS = 0.05  # entropic regularisation of the codes (SwAV's value)
SINKHORN_ITERS = 3


@torch.no_grad()
def sinkhorn_codes(scores: torch.Tensor, eps: float = SINKHORN_EPS, iters: int = SINKHORN_ITERS) -> torch.Tensor:
    """Soft assignments ``(N, K)`` of ``N`` rows to ``K`` prototypes from cosine ``scores (N, K)``:
    every row sums to 1 and every prototype receives about ``N / K`` of the total mass."""
    q = torch.exp((scores.float() - scores.max()) / eps)  # (N, K)
    q = q / q.sum()
    n, k = q.shape
    for _ in range(iters):
        q = q / q.sum(dim=0, keepdim=True).clamp_min(1e-12) / k
        q = q / q.sum(dim=1, keepdim=True).clamp_min(1e-12) / n
    return q * n


def swapped_prototype_loss(
    za: torch.Tensor, zb: torch.Tensor, prototypes: torch.Tensor, tau: float = 0.1, queue: torch.Tensor | None = None
) -> torch.Tensor:
    """The loss of the module docstring for unit region embeddings ``za``, ``zb (N, E)`` (row i = one
    region in views A and B), ``prototypes (K, E)`` (normalised here) and an optional ``queue (M, E)``
    of earlier unit embeddings that joins the Sinkhorn spread."""
    c = F.normalize(prototypes.float(), dim=1)
    sa, sb = za @ c.T, zb @ c.T  # (N, K)
    n = len(za)
    with torch.no_grad():
        extra = queue @ c.T if queue is not None and len(queue) else sa.new_zeros(0, c.shape[0])
        qa = sinkhorn_codes(torch.cat([sa.detach(), extra]))[:n]
        qb = sinkhorn_codes(torch.cat([sb.detach(), extra]))[:n]
    loss_a = -(qb * F.log_softmax(sa / tau, dim=1)).sum(1).mean()
    loss_b = -(qa * F.log_softmax(sb / tau, dim=1)).sum(1).mean()
    return 0.5 * (loss_a + loss_b)


class RegionPrototypes(nn.Module):
    """The learnt prototypes and the queue of recent regions (``loss.prototypes``).

    Args:
        embed_dim: channels of the embeddings.
        k: number of prototypes (``distill.prototypes_k``).
        tau: softmax temperature of the predictions (``distill.prototypes_tau``).
        queue_size: regions of earlier steps kept for the Sinkhorn spread (``distill.prototypes_queue``;
            0: the batch alone). The queue is a buffer, saved with a checkpoint, so resume is exact.
    """

    def __init__(self, embed_dim: int, k: int = 32, tau: float = 0.1, queue_size: int = 2048):
        super().__init__()
        self.tau = tau
        self.prototypes = nn.Parameter(F.normalize(torch.randn(k, embed_dim), dim=1))
        self.register_buffer("queue", torch.zeros(queue_size, embed_dim))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))

    def forward(self, embed_a, embed_b, slic_a, geom_a, geom_b) -> torch.Tensor:
        """Loss of the two views' ``(B, E, h, w)`` embeddings over view A's stride-4 superpixels;
        in training mode the regions then join the queue."""
        pa, pb, keys = pool_views(embed_a, embed_b, slic_a, geom_a, geom_b)
        if len(keys) < 2:
            return embed_a.sum() * 0.0 + self.prototypes.sum() * 0.0
        za, zb = F.normalize(pa.float(), dim=1), F.normalize(pb.float(), dim=1)
        filled = int(self.queue_filled)
        loss = swapped_prototype_loss(za, zb, self.prototypes, self.tau, self.queue[:filled])
        if self.training and len(self.queue):
            self._enqueue(F.normalize((za + zb).detach(), dim=1))
        return loss

    @torch.no_grad()
    def _enqueue(self, z: torch.Tensor) -> None:
        z = z[: len(self.queue)].to(self.queue.dtype)
        self.queue.copy_(torch.cat([z, self.queue[: len(self.queue) - len(z)]]))
        self.queue_filled.fill_(min(int(self.queue_filled) + len(z), len(self.queue)))
