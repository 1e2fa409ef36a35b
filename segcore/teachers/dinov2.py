"""DINOv2 ViT-S/14 and ViT-B/14 teachers, written here from the paper's description.

Architecture (Oquab et al., 2023, "DINOv2"; a pre-norm ViT): a 14x14 stride-14 patch conv, a class
token, learned position embeddings for a 37x37 grid (518 px pre-training) interpolated bicubically
to the input grid, ``depth`` blocks of ``x + ls1 * attn(norm1(x))``, ``x + ls2 * mlp(norm2(x))``
(LayerNorm eps 1e-6, LayerScale per-channel gains, GELU MLP of ratio 4), and a final LayerNorm.
Parameter names follow the released ``dinov2_vit*14_pretrain.pth`` files so those load strictly.

The teacher feeds the ImageNet-normalised image resized (bilinear) to the nearest multiple of 14 per
side and returns the normalised patch tokens as ``(B, D, H'/14, W'/14)``; :class:`Teacher` resamples
them to stride 4.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from segcore.errors import ArtifactError
from segcore.models.student import RGB_MEAN, RGB_STD
from segcore.teachers.base import TEACHER_DIMS, Teacher
from segcore.teachers.fake import FakeTeacher

logger = logging.getLogger(__name__)

PATCH = 14
PRETRAIN_GRID = 37  # 518 / 14
#: name -> (embed_dim, depth, heads)
ARCHS: dict[str, tuple[int, int, int]] = {"dinov2_vits14": (384, 12, 6), "dinov2_vitb14": (768, 12, 12)}


class LayerScale(nn.Module):
    """Per-channel gain ``gamma (D,)``."""

    def __init__(self, dim: int, init: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention: ``qkv`` (D -> 3D) and ``proj`` (D -> D) linear layers."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, h, N, d/h)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, h, N, d/h)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """``fc2(gelu(fc1(x)))`` with hidden width ``ratio * dim``."""

    def __init__(self, dim: int, ratio: int = 4):
        super().__init__()
        self.fc1 = nn.Linear(dim, ratio * dim)
        self.fc2 = nn.Linear(ratio * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale on both residual branches."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.attn, self.ls1 = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads), LayerScale(dim)
        self.norm2, self.mlp, self.ls2 = nn.LayerNorm(dim, eps=1e-6), Mlp(dim), LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """``(B, 3, H, W)`` -> ``(B, D, H/14, W/14)`` with one stride-14 conv named ``proj``."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, PATCH, stride=PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class DinoV2Teacher(Teacher):
    """A DINOv2 ViT/14 backbone as a frozen teacher; ``depth`` may be lowered for tests."""

    def __init__(self, embed_dim: int = 384, depth: int = 12, heads: int = 6):
        super().__init__()
        self.feat_dim = embed_dim
        self.patch_embed = PatchEmbed(embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + PRETRAIN_GRID**2, embed_dim) * 0.02)
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))  # used by DINOv2's iBOT loss; kept to load strictly
        self.blocks = nn.ModuleList(Block(embed_dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(RGB_STD).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    @classmethod
    def named(cls, name: str, depth: int | None = None) -> DinoV2Teacher:
        """The architecture of ``name`` (``dinov2_vits14`` | ``dinov2_vitb14``), randomly initialised."""
        if name not in ARCHS:
            raise KeyError(f"unknown DINOv2 teacher {name!r}; valid: {', '.join(ARCHS)}")
        dim, full_depth, heads = ARCHS[name]
        return cls(dim, full_depth if depth is None else depth, heads)

    def interpolated_pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        """``(1, 1 + gh*gw, D)``: class position plus the 37x37 grid resized bicubically to ``gh x gw``."""
        cls_pos, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        if (gh, gw) != (PRETRAIN_GRID, PRETRAIN_GRID):
            grid = grid.reshape(1, PRETRAIN_GRID, PRETRAIN_GRID, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
            grid = grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
        return torch.cat([cls_pos, grid], dim=1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        gh, gw = max(1, round(h / PATCH)), max(1, round(w / PATCH))
        x = (images.float() - self.mean) / self.std
        x = F.interpolate(x, size=(gh * PATCH, gw * PATCH), mode="bilinear", align_corners=False)
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, gh*gw, D)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        tokens = tokens + self.interpolated_pos_embed(gh, gw)
        for block in self.blocks:
            tokens = block(tokens)
        patches = self.norm(tokens)[:, 1:]  # (B, gh*gw, D)
        return patches.transpose(1, 2).reshape(len(patches), -1, gh, gw)


def candidate_paths(name: str, weights: str = "") -> list[Path]:
    """Where the weights of ``name`` are looked for: ``weights`` if set, else the torch hub cache."""
    if weights:
        return [Path(weights).expanduser()]
    return [Path(torch.hub.get_dir()) / "checkpoints" / f"{name}_pretrain.pth"]


def load_dinov2(name: str, weights: str = "", required: bool = False, depth: int | None = None) -> Teacher:
    """The DINOv2 teacher ``name`` with weights from a local file, or a :class:`FakeTeacher` fallback.

    Nothing is downloaded. When no weights file exists, a warning is logged and a FakeTeacher with
    the same feature dimension is returned, unless ``required`` is True: then :class:`ArtifactError`
    names the paths searched. A file that exists but does not match the architecture also raises.
    """
    paths = candidate_paths(name, weights)
    found = next((p for p in paths if p.is_file()), None)
    if found is None:
        searched = ", ".join(str(p) for p in paths)
        if required:
            raise ArtifactError(
                f"teacher {name} weights not found (searched: {searched}); download {name}_pretrain.pth "
                f"from the DINOv2 release and set teacher.weights=PATH, or set teacher.required=false"
            )
        logger.warning("teacher %s weights not found (searched: %s); using a FakeTeacher instead", name, searched)
        return FakeTeacher(feat_dim=TEACHER_DIMS[name], seed=0)
    model = DinoV2Teacher.named(name, depth)
    try:
        state = torch.load(found, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, KeyError, TypeError) as exc:
        raise ArtifactError(f"cannot load teacher {name} weights from {found}: {exc}") from exc
    logger.info("teacher %s loaded from %s", name, found)
    return model.freeze()
