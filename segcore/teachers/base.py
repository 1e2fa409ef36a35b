"""The frozen-teacher interface used for distillation (training only, never exported)."""

from __future__ import annotations

import torch
from torch import nn

from segcore.config import Config
from segcore.models.student import STRIDE

#: Feature channels of each named teacher. A teacher that falls back to :class:`FakeTeacher`
#: keeps the dimension of the teacher it stands in for, so the distillation projection built
#: from the config fits whichever one runs.
TEACHER_DIMS: dict[str, int] = {"dinov2_vits14": 384, "dinov2_vitb14": 768}


def teacher_feat_dim(cfg: Config) -> int:
    """Channels of the features :func:`segcore.teachers.build_teacher` will produce for ``cfg``."""
    return TEACHER_DIMS.get(cfg.teacher.name, cfg.teacher.feat_dim)


class Teacher(nn.Module):
    """A frozen feature extractor: ``images (B, 3, H, W)`` in 0..1 -> ``(B, feat_dim, ceil(H/4), ceil(W/4))``.

    Subclasses implement :meth:`features`; calling the teacher runs it without gradients, in eval
    mode, and returns float32 features at stride 4.
    """

    feat_dim: int

    def freeze(self) -> Teacher:
        """Eval mode, no parameter takes gradients."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> Teacher:
        """A teacher stays in eval mode (dropout/norm statistics never change)."""
        return super().train(False)

    def features(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = -(-images.shape[-2] // STRIDE), -(-images.shape[-1] // STRIDE)
        with torch.no_grad():
            feats = self.features(images).float()  # (B, D, h', w')
            if feats.shape[-2:] != (h, w):
                feats = nn.functional.interpolate(feats, size=(h, w), mode="bilinear", align_corners=False)
        return feats
