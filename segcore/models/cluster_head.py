"""Per-image soft k-means over L2-normalised embeddings, with a deterministic initialisation.

Algorithm (what the numpy runtime reproduces), per image, for ``z`` of shape ``(E, h, w)``,
L2-normalised over ``E``, and a valid mask ``(h, w)``:

1. **Sample grid.** ``s`` = the smallest integer >= 1 with ``ceil(h/s) * ceil(w/s) <= init_samples``
   (integer arithmetic). Samples are ``z[:, ::s, ::s]`` in row-major order.
2. **Farthest-point init** on cosine distance among *valid* samples: the first prototype is the
   sample with the largest cosine to the (unnormalised) mean of the valid samples; then repeatedly
   the sample whose smallest ``1 - cos`` to the chosen prototypes is largest. Ties pick the lowest
   index (``argmax`` semantics of numpy and torch). Invalid samples are never picked.
3. **Refinement**, ``iters`` times over *all valid pixels*: ``p = softmax(z . c / T_r)`` over ``K``;
   ``c_k = normalise(sum_n valid_n * p_nk * z_n)``. ``T_r`` (``refine_temperature``) is sharper than
   ``T``: with a soft ``T`` such as 0.8 every pixel spreads over all prototypes and the updates pull
   every prototype to the global mean direction (all logits equal, uniform probabilities).
4. **Output** ``logits = z . c / T`` ``(K, h, w)`` with the refined ``c``.

``normalise`` divides by ``max(||v||, 1e-12)`` (``torch.nn.functional.normalize``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-12


def sample_stride(h: int, w: int, max_samples: int) -> int:
    """Smallest ``s >= 1`` with ``ceil(h/s) * ceil(w/s) <= max_samples``."""
    s = 1
    while (-(-h // s)) * (-(-w // s)) > max_samples:
        s += 1
    return s


def farthest_point_init(samples: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """Deterministic farthest-point sampling on cosine distance.

    Args:
        samples: ``(N, E)`` L2-normalised embeddings.
        valid: ``(N,)`` bool; invalid samples are never chosen.
        k: prototypes to pick.

    Returns:
        ``(k,)`` int64 indexes into ``samples``. With fewer than ``k`` distinct valid samples,
        indexes repeat; with no valid sample at all, index 0 is used throughout.
    """
    with torch.autocast(samples.device.type, enabled=False):
        samples = samples.detach().float()
        mean = (samples * valid.float()[:, None]).sum(0)  # (E,)
        neg_inf = torch.tensor(float("-inf"), device=samples.device)
        idx = [int(torch.argmax(torch.where(valid, samples @ mean, neg_inf)))]
        min_dist = 1.0 - samples @ samples[idx[0]]  # (N,)
        for _ in range(k - 1):
            nxt = int(torch.argmax(torch.where(valid, min_dist, neg_inf)))
            idx.append(nxt)
            min_dist = torch.minimum(min_dist, 1.0 - samples @ samples[nxt])
    return torch.tensor(idx, dtype=torch.long, device=samples.device)


def downsample_mask(mask: torch.Tensor, h: int, w: int, stride: int = 4) -> torch.Tensor:
    """``(B, H, W)`` full-resolution mask -> ``(B, h, w)`` by taking pixel ``[stride*i, stride*j]``.

    A mask already of shape ``(B, h, w)`` is returned unchanged.
    """
    if mask.shape[-2:] == (h, w):
        return mask.bool()
    return mask[:, ::stride, ::stride][:, :h, :w].bool()


class SoftKMeansHead(nn.Module):
    """Soft k-means cluster head (no parameters).

    Args:
        max_k: prototypes while training; the largest ``k`` selectable at inference.
        temperature: cosine similarities are divided by it for the output logits.
        iters: refinement iterations after the farthest-point init.
        refine_temperature: temperature of the refinement updates (default: ``temperature``).
        init_samples: the init looks at most at this many strided pixels per image.
    """

    def __init__(
        self,
        max_k: int = 16,
        temperature: float = 0.8,
        iters: int = 3,
        init_samples: int = 1024,
        refine_temperature: float | None = None,
    ):
        super().__init__()
        refine_temperature = temperature if refine_temperature is None else refine_temperature
        if max_k < 1 or min(temperature, refine_temperature) <= 0 or iters < 0 or init_samples < 1:
            raise ValueError("need max_k >= 1, temperatures > 0, iters >= 0, init_samples >= 1")
        self.max_k, self.temperature, self.iters, self.init_samples = max_k, temperature, iters, init_samples
        self.refine_temperature = refine_temperature

    def init_prototypes(self, z: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
        """``z (B, E, h, w)`` normalised, ``valid (B, h, w)`` -> initial prototypes ``(B, k, E)``."""
        s = sample_stride(z.shape[-2], z.shape[-1], self.init_samples)
        samples = z[:, :, ::s, ::s].flatten(2).transpose(1, 2)  # (B, N, E)
        svalid = valid[:, ::s, ::s].flatten(1)  # (B, N)
        protos = []
        for b in range(z.shape[0]):
            with torch.no_grad():
                idx = farthest_point_init(samples[b], svalid[b], k)
            protos.append(samples[b, idx])  # (k, E)
        return torch.stack(protos)

    def refine(self, flat: torch.Tensor, weights: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
        """``iters`` soft k-means updates. ``flat (B, N, E)``, ``weights (B, N)``, ``protos (B, K, E)``."""
        for _ in range(self.iters):
            p = torch.softmax(flat @ protos.transpose(1, 2) / self.refine_temperature, dim=-1)  # (B, N, K)
            p = p * weights[..., None]
            protos = F.normalize(p.transpose(1, 2) @ flat, dim=-1, eps=EPS)  # (B, K, E)
        return protos

    def forward(
        self,
        z: torch.Tensor,
        k: int | None = None,
        prototypes: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Assign pixels to prototypes.

        Args:
            z: ``(B, E, h, w)`` embeddings, L2-normalised over ``E``.
            k: clusters, ``1 <= k <= max_k`` (default ``max_k``); ignored when ``prototypes`` is given.
            prototypes: optional ``(B or 1, K, E)``; when given, no fitting happens: pixels are
                assigned to these (normalised) prototypes.
            valid: optional ``(B, h, w)`` or ``(B, 4h', 4w')`` bool; invalid pixels do not shape
                the prototypes (their logits are still computed).

        Returns:
            ``{"logits": (B, K, h, w), "prototypes": (B, K, E)}``.
        """
        b, _, h, w = z.shape
        flat = z.flatten(2).transpose(1, 2)  # (B, N, E)
        if prototypes is not None:
            protos = F.normalize(prototypes.to(z.dtype), dim=-1, eps=EPS).expand(b, -1, -1)  # (B, K, E)
        else:
            k = self.max_k if k is None else int(k)
            if not 1 <= k <= self.max_k:
                raise ValueError(f"k={k} must be within 1..max_k={self.max_k}")
            if valid is None:
                valid = torch.ones(b, h, w, dtype=torch.bool, device=z.device)
            valid = downsample_mask(valid, h, w)
            protos = self.init_prototypes(z, valid, k)
            protos = self.refine(flat, valid.flatten(1).to(z.dtype), protos)
        logits = (flat @ protos.transpose(1, 2) / self.temperature).transpose(1, 2)  # (B, K, N)
        return {"logits": logits.reshape(b, -1, h, w), "prototypes": protos}
