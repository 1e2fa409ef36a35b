"""The composite training loss: every named term, each normalised by an EMA of its own magnitude.

``total = sum_t weight_t * raw_t / max(ema_t, EMA_FLOOR)``, where ``ema_t`` tracks ``|raw_t|``
(decay ``distill.ema_decay``; the first observation initialises it). EMAs live in buffers, so they
are saved with a checkpoint and resume is exact; they are only updated in training mode.

Terms (weights from ``cfg.loss`` unless noted) and the views they use:

==============  ==============================  ===========================================
term            weight                          computed on
==============  ==============================  ===========================================
consistency     ``loss.consistency``            both views, mapped to the canonical frame
entropy         ``loss.entropy``                mean over views
marginal        ``loss.marginal``               mean over views
smooth          ``loss.smooth``                 mean over views
cluster         ``loss.cluster``                mean over views
slic_pull/push  ``loss.slic`` (each)            mean over views
tv              ``loss.tv``                     mean over views
recon/_grad     ``autoencoder.lambda_recon``    view A (only when ``recon`` is passed)
feature         ``loss.feature``                view A (only with ``teacher_feats``)
affinity        ``loss.affinity``               view A (only with ``teacher_feats``)
contrast        ``loss.contrast``               superpixels of both views (canonical frame)
descriptor      ``loss.descriptor``             superpixels of both views; descriptors of view A
==============  ==============================  ===========================================

A term whose weight is 0 (or whose inputs are absent) is not computed and has no key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from segcore.augment import invert_geom
from segcore.config import Config
from segcore.losses.contrastive import descriptor_affinity, superpixel_infonce
from segcore.losses.descriptors import region_descriptors
from segcore.losses.distill import affinity_loss, cluster_loss, feature_loss
from segcore.losses.recon import recon_losses
from segcore.losses.slic_prior import edge_aware_tv, slic_pull_loss, slic_push_loss
from segcore.losses.unsupervised import (
    consistency_loss,
    entropy_loss,
    marginal_loss,
    smoothness_loss,
    stride4_mask,
)
from segcore.models.student import STRIDE
from segcore.teachers.base import teacher_feat_dim

TERMS = (
    "consistency", "entropy", "marginal", "smooth", "cluster", "slic_pull", "slic_push", "tv",
    "recon", "recon_grad", "feature", "affinity", "contrast", "descriptor",
)  # fmt: skip
EMA_FLOOR = 0.05


def term_weights(cfg: Config) -> dict[str, float]:
    """Weight of every term in :data:`TERMS` under ``cfg`` (recon terms 0 when the autoencoder is off)."""
    lo, lam = cfg.loss, (cfg.autoencoder.lambda_recon if cfg.autoencoder.enabled else 0.0)
    teacher = 1.0 if cfg.teacher.enabled else 0.0
    return {
        "consistency": lo.consistency, "entropy": lo.entropy, "marginal": lo.marginal, "smooth": lo.smooth,
        "cluster": lo.cluster, "slic_pull": lo.slic, "slic_push": lo.slic, "tv": lo.tv,
        "recon": lam, "recon_grad": lam, "feature": lo.feature * teacher, "affinity": lo.affinity * teacher,
        "contrast": lo.contrast, "descriptor": lo.descriptor,
    }  # fmt: skip


class CompositeLoss(nn.Module):
    """Holds the training-only loss state: the teacher projection and the EMA normalisers.

    ``feature_proj`` (1x1 conv ``model.embed_dim -> teacher dim``) exists only when the teacher is
    enabled and ``loss.feature > 0``.
    """

    def __init__(self, cfg: Config):
        super().__init__()
        self.weights = term_weights(cfg)
        self.decay = cfg.distill.ema_decay
        self.edge_sigma = cfg.loss.edge_sigma
        self.blur_sigma = cfg.autoencoder.blur_sigma
        self.affinity_pairs = cfg.distill.affinity_pairs
        self.contrast_tau = cfg.distill.contrast_tau
        self.descriptor_bandwidth = cfg.distill.descriptor_bandwidth
        self.slic_args = (cfg.distill.slic_margin, cfg.distill.slic_colour_scale, cfg.distill.slic_texture_scale)
        self.register_buffer("ema", torch.zeros(len(TERMS)))
        self.register_buffer("ema_seen", torch.zeros(len(TERMS), dtype=torch.bool))
        self.feature_proj = None
        if self.weights["feature"] > 0:
            self.feature_proj = nn.Conv2d(cfg.model.embed_dim, teacher_feat_dim(cfg), 1, bias=True)

    def on(self, name: str) -> bool:
        return self.weights[name] > 0

    def _per_view(self, fn: Callable[..., torch.Tensor], views: list[tuple[dict, dict, Any]]) -> torch.Tensor:
        """Mean over views of ``fn(out, batch, mask)``."""
        return sum(fn(out, batch, mask) for out, batch, mask in views) / len(views)

    def _label_free(self, views, out_a, out_b, batch_a, batch_b) -> dict[str, torch.Tensor]:
        raw: dict[str, torch.Tensor] = {}
        if self.on("consistency"):
            canon = None if batch_a.get("valid") is None else invert_geom(batch_a["valid"], batch_a["geom"])
            mask = stride4_mask(canon, *out_a["probs"].shape[-2:])
            raw["consistency"] = consistency_loss(
                out_a["probs"], out_b["probs"], batch_a["geom"], batch_b["geom"], mask
            )
        if self.on("entropy"):
            raw["entropy"] = self._per_view(lambda o, b, m: entropy_loss(o["probs"], m), views)
        if self.on("marginal"):
            raw["marginal"] = self._per_view(lambda o, b, m: marginal_loss(o["probs"], m), views)
        if self.on("smooth"):
            raw["smooth"] = self._per_view(
                lambda o, b, m: smoothness_loss(o["probs"], b["image"], self.edge_sigma, m), views
            )
        if self.on("cluster"):
            raw["cluster"] = self._per_view(lambda o, b, m: cluster_loss(o["probs"], m), views)
        return raw

    def _embedding_priors(self, views) -> dict[str, torch.Tensor]:
        raw: dict[str, torch.Tensor] = {}
        if self.on("slic_pull"):
            raw["slic_pull"] = self._per_view(lambda o, b, m: slic_pull_loss(o["embed"], b["slic"]), views)
        if self.on("slic_push"):
            raw["slic_push"] = self._per_view(
                lambda o, b, m: slic_push_loss(o["embed"], b["slic"], b["image"], *self.slic_args), views
            )
        (out_a, batch_a, _), (out_b, batch_b, _) = views
        h, w = out_a["embed"].shape[-2:]
        slic = batch_a["slic"][:, ::STRIDE, ::STRIDE][:, :h, :w]
        if self.on("descriptor"):
            raw["descriptor"] = descriptor_affinity(out_a["embed"], out_b["embed"], slic, batch_a["geom"],
                                                    batch_b["geom"], region_descriptors(batch_a["image"]),
                                                    self.descriptor_bandwidth)
        if self.on("contrast"):
            raw["contrast"] = superpixel_infonce(out_a["embed"], out_b["embed"], slic, batch_a["geom"],
                                                 batch_b["geom"], self.contrast_tau)
        if self.on("tv"):
            raw["tv"] = self._per_view(lambda o, b, m: edge_aware_tv(o["embed"], b["image"], self.edge_sigma, m), views)
        return raw

    def _teacher(self, out_a, mask_a, teacher_feats, generator) -> dict[str, torch.Tensor]:
        raw: dict[str, torch.Tensor] = {}
        if self.on("feature"):
            if teacher_feats.shape[1] != self.feature_proj.out_channels:
                raise ValueError(
                    f"teacher features have {teacher_feats.shape[1]} channels but the feature projection "
                    f"expects {self.feature_proj.out_channels}; check teacher.name / teacher.feat_dim"
                )
            proj = self.feature_proj(out_a["embed"].to(self.feature_proj.weight.dtype))  # (B, D, h, w)
            raw["feature"] = feature_loss(proj, teacher_feats, mask_a)
        if self.on("affinity"):
            raw["affinity"] = affinity_loss(out_a["embed"], teacher_feats, self.affinity_pairs, generator, mask_a)
        return raw

    @torch.no_grad()
    def _update_ema(self, raw: dict[str, torch.Tensor]) -> None:
        for name, value in raw.items():
            i = TERMS.index(name)
            mag = value.detach().abs().float()
            self.ema[i] = mag if not self.ema_seen[i] else self.decay * self.ema[i] + (1 - self.decay) * mag
            self.ema_seen[i] = True

    def forward(
        self,
        out_a: dict[str, torch.Tensor],
        out_b: dict[str, torch.Tensor],
        batch_a: dict[str, Any],
        batch_b: dict[str, Any],
        teacher_feats: torch.Tensor | None = None,
        recon: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Named raw terms plus ``total``.

        Args:
            out_a, out_b: segmenter outputs of the two views (``embed``, ``probs`` at stride 4), with
                view B assigned to view A's prototypes.
            batch_a, batch_b: the view batches: ``image (B, 3, H, W)``, ``slic``/``valid (B, H, W)``,
                ``geom (B, 3)``.
            teacher_feats: ``(B, D, h', w')`` teacher features of view A's image, or None.
            recon: ``(B, 3, h, w)`` decoder output from ``out_a["embed"]``, or None.
            generator: CPU generator for the affinity pair sampling.
        """
        h, w = out_a["probs"].shape[-2:]
        views = [(o, b, stride4_mask(b.get("valid"), h, w)) for o, b in ((out_a, batch_a), (out_b, batch_b))]
        raw = self._label_free(views, out_a, out_b, batch_a, batch_b)
        raw.update(self._embedding_priors(views))
        if recon is not None and self.on("recon"):
            raw.update(recon_losses(recon, batch_a["image"], self.blur_sigma, views[0][2]))
        if teacher_feats is not None:
            raw.update(self._teacher(out_a, views[0][2], teacher_feats, generator))
        if self.training:
            self._update_ema(raw)
        total = sum(self.weights[n] * v / self.ema[TERMS.index(n)].clamp_min(EMA_FLOOR) for n, v in raw.items())
        raw["total"] = total if raw else out_a["probs"].sum() * 0.0
        return raw
