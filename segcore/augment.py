"""Two-view augmentation on sample dicts, with the geometry of each view recorded.

Geometric ops (90 degree rotations, flips) move ``image``, ``slic``, ``target`` and ``valid``
together; photometric ops (brightness, contrast, saturation, hue, noise, a smooth illumination
gain) touch ``image`` only. Each view carries ``geom``, an ``int64 (3,)`` tensor
``(k_rot90, hflip, vflip)``: the forward map flips the last axis if ``hflip``, then the
second-to-last if ``vflip``, then applies
``torch.rot90(x, k, dims=(-2, -1))``. :func:`invert_geom` undoes it. All randomness comes from the
``torch.Generator`` passed in, so the same generator state gives the same views.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from segcore.config import AugConfig

SPATIAL_KEYS = ("image", "slic", "target", "valid")
_LUMA = (0.299, 0.587, 0.114)


def _geom_single(x: torch.Tensor, k: int, hflip: bool, vflip: bool, inverse: bool) -> torch.Tensor:
    if not inverse:
        if hflip:
            x = torch.flip(x, dims=(-1,))
        if vflip:
            x = torch.flip(x, dims=(-2,))
        return torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x
    if k % 4:
        x = torch.rot90(x, -(k % 4), dims=(-2, -1))
    if vflip:
        x = torch.flip(x, dims=(-2,))
    if hflip:
        x = torch.flip(x, dims=(-1,))
    return x


def _apply(x: torch.Tensor, geom: torch.Tensor, inverse: bool) -> torch.Tensor:
    geom = torch.as_tensor(geom)
    if geom.shape == (3,):
        k, h, v = (int(g) for g in geom.tolist())
        return _geom_single(x, k, bool(h), bool(v), inverse)
    if geom.ndim != 2 or geom.shape[1] != 3 or x.shape[0] != geom.shape[0]:
        raise ValueError(
            f"geom must be (3,) or (B, 3) with x (B, ..., H, W); got geom {tuple(geom.shape)}, x {tuple(x.shape)}"
        )
    ks = geom[:, 0] % 4
    if x.shape[-2] != x.shape[-1] and bool((ks % 2 != ks[0] % 2).any()):
        raise ValueError(
            "a batch of non-square maps cannot mix odd and even rotations (the shapes would differ); "
            "draw k from {0, 2} for non-square crops"
        )
    out = [_geom_single(x[i], int(k), bool(h), bool(v), inverse) for i, (k, h, v) in enumerate(geom.tolist())]
    return torch.stack(out)


def apply_geom(x: torch.Tensor, geom: torch.Tensor) -> torch.Tensor:
    """Map ``x`` from the canonical crop frame into a view's frame.

    Args:
        x: ``(..., H, W)`` for a single ``geom (3,)``, or ``(B, ..., H, W)`` for ``geom (B, 3)``.
        geom: ``int64 (3,)`` or ``(B, 3)`` rows ``(k_rot90, hflip, vflip)``.

    Returns:
        The mapped tensor, ``(..., W, H)`` when ``k`` is odd. Batched non-square input must not mix
        odd and even ``k`` (raises ``ValueError``).
    """
    return _apply(x, geom, inverse=False)


def invert_geom(x: torch.Tensor, geom: torch.Tensor) -> torch.Tensor:
    """Map ``x`` from a view's frame back to the canonical crop frame: ``invert_geom(apply_geom(x, g), g) == x``.

    Shapes as in :func:`apply_geom` (``x`` is in the view frame, e.g. ``(B, K, h, w)`` logits).
    """
    return _apply(x, geom, inverse=True)


def random_geom(gen: torch.Generator, cfg: AugConfig, square: bool = True) -> torch.Tensor:
    """Draw ``int64 (3,)`` ``(k_rot90, hflip, vflip)``; disabled ops stay 0. ``square=False`` limits k to {0, 2}."""
    draws = torch.randint(0, 4, (3,), generator=gen)
    k = int(draws[0]) if cfg.rot90 else 0
    if not square:
        k = 2 * (k % 2)  # keep the draw count fixed; only half-turns keep a non-square batch stackable
    hflip = int(draws[1] % 2) if cfg.hflip else 0
    vflip = int(draws[2] % 2) if cfg.vflip else 0
    return torch.tensor([k, hflip, vflip], dtype=torch.int64)


def photometric(image: torch.Tensor, valid: torch.Tensor, gen: torch.Generator, cfg: AugConfig) -> torch.Tensor:
    """Random brightness, contrast, saturation and Gaussian noise on one image.

    Args:
        image: ``float32 (3, H, W)`` RGB in 0..1.
        valid: ``bool (H, W)``; invalid pixels come out 0.
        gen: source of all randomness (always consumed the same way, whatever ``cfg`` enables).
        cfg: strengths; 0 disables an op. Brightness adds ``U(-b, b)``; contrast and saturation
            scale by ``U(1 - c, 1 + c)`` about the mean grey level and the per-pixel grey value.

    Returns:
        ``float32 (3, H, W)`` clamped to 0..1.
    """
    u = torch.rand(3, generator=gen) * 2.0 - 1.0  # (3,) in -1..1
    noise = torch.randn(image.shape, generator=gen, dtype=image.dtype)
    grid = torch.rand(1, 1, 3, 3, generator=gen, dtype=image.dtype) * 2.0 - 1.0  # (1, 1, 3, 3) in -1..1
    turn = float(torch.rand(1, generator=gen)) * 2.0 - 1.0
    out = image
    if cfg.hue:
        out = rotate_hue(out, cfg.hue * turn * math.pi)
    if cfg.illumination:
        out = out * illumination_gain(grid, image.shape[-2], image.shape[-1], cfg.illumination)
    if cfg.brightness:
        out = out + cfg.brightness * float(u[0])
    weights = torch.tensor(_LUMA, dtype=image.dtype).view(3, 1, 1)
    if cfg.contrast:
        grey = (out * weights).sum(0)  # (H, W)
        mean = grey[valid].mean() if bool(valid.any()) else grey.new_zeros(())
        out = (out - mean) * (1.0 + cfg.contrast * float(u[1])) + mean
    if cfg.saturation:
        grey = (out * weights).sum(0, keepdim=True)  # (1, H, W)
        out = grey + (out - grey) * (1.0 + cfg.saturation * float(u[2]))
    if cfg.noise_std:
        out = out + cfg.noise_std * noise
    return torch.where(valid.unsqueeze(0), out.clamp(0.0, 1.0), torch.zeros_like(out))


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def rotate_hue(image: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate the hue of ``(3, H, W)`` RGB by ``angle`` radians (a rotation of the YIQ chroma plane;
    luma is unchanged)."""
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    m = (_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).to(image.dtype)  # (3, 3)
    return torch.einsum("ij,jhw->ihw", m, image)


def illumination_gain(grid: torch.Tensor, height: int, width: int, strength: float) -> torch.Tensor:
    """A smooth multiplicative gain ``(1, H, W)`` in ``1 ± strength``: a 3x3 grid of draws in -1..1
    upsampled bicubically (haze, vignetting and sun-angle changes across a scene look like this)."""
    field = torch.nn.functional.interpolate(grid, size=(height, width), mode="bicubic", align_corners=True)
    return 1.0 + strength * field[0].clamp(-1.0, 1.0)  # (1, H, W)


def augment_view(
    sample: dict[str, Any], gen: torch.Generator, cfg: AugConfig, geom: torch.Tensor | None = None
) -> dict[str, Any]:
    """One augmented view of a sample: geometry (drawn, or ``geom`` if given) then photometry.

    Returns a new sample dict with the same keys plus ``geom int64 (3,)``; the input is not modified.
    """
    if geom is None:
        geom = random_geom(gen, cfg)  # a single sample may turn by any k, square or not
    view = {key: value for key, value in sample.items() if key not in SPATIAL_KEYS}
    for key in SPATIAL_KEYS:
        view[key] = apply_geom(sample[key], geom)
    view["image"] = photometric(view["image"], view["valid"], gen, cfg)
    view["geom"] = geom
    if "meta" in sample:
        view["meta"] = dict(sample["meta"])
    return view


def two_views(sample: dict[str, Any], gen: torch.Generator, cfg: AugConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two independently augmented views of the same crop (each with its own ``geom``)."""
    return augment_view(sample, gen, cfg), augment_view(sample, gen, cfg)


def augment_batch(batch: dict[str, Any], gen: torch.Generator, cfg: AugConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two view batches of a collated batch (``image (B, 3, H, W)``, ``slic/target/valid (B, H, W)``).

    Each item gets its own geometry and photometry; the views carry ``geom int64 (B, 3)``. For
    non-square crops only half-turns are drawn, so every item of a view keeps the shape ``(H, W)``.
    ``meta`` (a list of dicts) is passed through.
    """
    square = batch["image"].shape[-2] == batch["image"].shape[-1]
    views: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    for i in range(batch["image"].shape[0]):
        item = {key: batch[key][i] for key in SPATIAL_KEYS}
        for out in views:
            out.append(augment_view(item, gen, cfg, geom=random_geom(gen, cfg, square=square)))
    result = []
    for items in views:
        view = {key: torch.stack([it[key] for it in items]) for key in (*SPATIAL_KEYS, "geom")}
        for key, value in batch.items():
            if key not in view:
                view[key] = value
        result.append(view)
    return result[0], result[1]
