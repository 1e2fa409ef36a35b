"""Builds model parts by name and the full segmenter from a :class:`~segcore.config.Config`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from segcore.config import Config
from segcore.models.cluster_head import SoftKMeansHead
from segcore.models.decoder import TinyReconDecoder
from segcore.models.refiner import Refiner
from segcore.models.segmenter import MonolithicSegmenter
from segcore.models.smoothing import FastSmoothing
from segcore.models.student import StudentEmbeddingNet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "student": StudentEmbeddingNet,
    "soft_kmeans": SoftKMeansHead,
    "smoothing": FastSmoothing,
    "refiner": Refiner,
    "recon_decoder": TinyReconDecoder,
    "segmenter": MonolithicSegmenter,
}


def create_model(name: str, **kw: Any) -> nn.Module:
    """``MODELS[name](**kw)``; an unknown name raises ``KeyError`` listing the valid ones."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kw)


def build_segmenter(cfg: Config) -> MonolithicSegmenter:
    """The segmenter described by ``cfg.student``, ``cfg.model`` and ``cfg.distill.cluster_iters``."""
    s, m = cfg.student, cfg.model
    student = create_model("student", width=s.width, embed_dim=s.embed_dim, depth=s.depth, norm=s.norm, groups=s.groups,
                           dilations=s.dilations)
    proj = nn.Conv2d(s.embed_dim, m.embed_dim, 1, bias=True) if m.embed_dim != s.embed_dim else None
    head = create_model(
        "soft_kmeans",
        max_k=m.max_k,
        temperature=m.temperature,
        iters=cfg.distill.cluster_iters,
        refine_temperature=m.refine_temperature,
    )
    smoothing = create_model("smoothing", iters=m.smooth_iters, alpha=m.smooth_alpha) if m.smoothing else None
    refiner = create_model("refiner", embed_dim=m.embed_dim) if m.refiner else None
    return MonolithicSegmenter(student, head, smoothing=smoothing, refiner=refiner, proj=proj)


def build_decoder(cfg: Config) -> TinyReconDecoder:
    """The training-only reconstruction decoder over the ``cfg.model.embed_dim`` embeddings."""
    return create_model("recon_decoder", embed_dim=cfg.model.embed_dim)
