"""Reconstruction losses for the training-only decoder (``autoencoder.enabled``).

The target is the input image blurred with a Gaussian (``autoencoder.blur_sigma``), then sampled at
the centres of the stride-4 cells (bilinear, ``align_corners=False``: the mean of the 2x2 pixels
around each centre). Sampling rather than 4x4 averaging keeps part of the fine texture (furrows,
canopy), which the gradient-magnitude term asks the embeddings to carry.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from segcore.losses.unsupervised import masked_mean
from segcore.models.student import STRIDE, pad_to_multiple


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius ``ceil(3 sigma)`` (``[1.0]`` when ``sigma <= 0``)."""
    if sigma <= 0:
        return torch.ones(1)
    r = math.ceil(3.0 * sigma)
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` with replicate padding; same shape."""
    k = gaussian_kernel1d(sigma).to(image.device)
    r, c = len(k) // 2, image.shape[1]
    x = image.float()
    if r == 0:
        return x
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def recon_target(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(B, 3, H, W)`` in 0..1 -> ``(B, 3, ceil(H/4), ceil(W/4))`` blurred, sampled at cell centres."""
    x = pad_to_multiple(gaussian_blur(image, sigma))
    h, w = x.shape[-2] // STRIDE, x.shape[-1] // STRIDE
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Per-channel Sobel gradient magnitude ``sqrt(gx^2 + gy^2 + 1e-12)`` of ``(B, C, h, w)`` (replicate pad)."""
    c = x.shape[1]
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
    kernel = torch.stack([gx, gx.T])[:, None].repeat(c, 1, 1, 1)  # (2C, 1, 3, 3)
    g = F.conv2d(F.pad(x.float(), (1, 1, 1, 1), mode="replicate"), kernel, groups=c)  # (B, 2C, h, w)
    g = g.view(x.shape[0], c, 2, *x.shape[-2:])
    return (g.square().sum(2) + 1e-12).sqrt()


def recon_losses(
    pred: torch.Tensor, image: torch.Tensor, sigma: float, mask: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """``{"recon": L1(pred, target), "recon_grad": L1(sobel(pred), sobel(target))}``, over valid cells.

    ``pred (B, 3, h, w)`` is the decoder output; ``image (B, 3, H, W)`` the input it saw.
    """
    target = recon_target(image, sigma)  # (B, 3, h, w)
    l1 = (pred.float() - target).abs().mean(1)  # (B, h, w)
    lg = (sobel_magnitude(pred) - sobel_magnitude(target)).abs().mean(1)
    return {"recon": masked_mean(l1, mask), "recon_grad": masked_mean(lg, mask)}
