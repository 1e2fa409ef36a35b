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
prototypes      ``loss.prototypes``             superpixels of both views (canonical frame)
==============  ==============================  ===========================================

A term whose weight is 0 (or whose inputs are absent) is not computed and has no key. Terms added
after a checkpoint was written start with no EMA when it is loaded (the normaliser buffers grow).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from segcore.augment import invert_geom
from segcore.config import Config, DistillConfig, LossConfig
from segcore.losses.contrastive import superpixel_infonce
from segcore.losses.descriptor_affinity import descriptor_affinity
from segcore.losses.descriptors import region_descriptors
from segcore.losses.distill import affinity_loss, cluster_loss, feature_loss
from segcore.losses.prototypes import RegionPrototypes
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
    "recon", "recon_grad", "feature", "affinity", "contrast", "descriptor", "prototypes",
)  # fmt: skip
EMA_FLOOR = 0.05


def term_weights(lo: LossConfig, recon_weight: float = 0.0, teacher: bool = False) -> dict[str, float]:
    """Weight of every term in :data:`TERMS`: the loss section, the reconstruction weight (0 when the
    autoencoder is off) and whether a teacher is on (the teacher terms are 0 without one)."""
    lam, teacher = recon_weight, (1.0 if teacher else 0.0)
    return {
        "consistency": lo.consistency, "entropy": lo.entropy, "marginal": lo.marginal, "smooth": lo.smooth,
        "cluster": lo.cluster, "slic_pull": lo.slic, "slic_push": lo.slic, "tv": lo.tv,
        "recon": lam, "recon_grad": lam, "feature": lo.feature * teacher, "affinity": lo.affinity * teacher,
        "contrast": lo.contrast, "descriptor": lo.descriptor, "prototypes": lo.prototypes,
    }  # fmt: skip


def build_loss(cfg: Config) -> CompositeLoss:
    """The :class:`CompositeLoss` of a resolved config (its loss, distill, autoencoder and teacher parts)."""
    ae = cfg.autoencoder
    return CompositeLoss(
        cfg.loss, cfg.distill, recon_weight=ae.lambda_recon if ae.enabled else 0.0, blur_sigma=ae.blur_sigma,
        embed_dim=cfg.model.embed_dim, teacher_dim=teacher_feat_dim(cfg) if cfg.teacher.enabled else None,
    )


class CompositeLoss(nn.Module):
    """Holds the training-only loss state: the teacher projection and the EMA normalisers.

    Args:
        loss: term weights and the edge scale (``cfg.loss``).
        distill: temperatures, bandwidth, SLIC prior scales, EMA decay (``cfg.distill``).
        recon_weight: weight of the reconstruction terms (0: off).
        blur_sigma: blur of the reconstruction target in pixels.
        embed_dim: channels of the embeddings the teacher projection reads.
        teacher_dim: teacher feature channels, or None without a teacher. ``feature_proj`` (1x1 conv
            ``embed_dim -> teacher_dim``) exists only with a teacher and ``loss.feature > 0``.
    """

    def __init__(self, loss: LossConfig, distill: DistillConfig, *, recon_weight: float = 0.0,
                 blur_sigma: float = 1.0, embed_dim: int = 96, teacher_dim: int | None = None):
        super().__init__()
        self.weights = term_weights(loss, recon_weight, teacher_dim is not None)
        self.decay = distill.ema_decay
        self.edge_sigma = loss.edge_sigma
        self.blur_sigma = blur_sigma
        self.affinity_pairs = distill.affinity_pairs
        self.contrast_tau = distill.contrast_tau
        self.contrast_neighbours = distill.contrast_neighbours
        self.descriptor_bandwidth = distill.descriptor_bandwidth
        self.slic_args = (distill.slic_margin, distill.slic_colour_scale, distill.slic_texture_scale)
        self.register_buffer("ema", torch.zeros(len(TERMS)))
        self.register_buffer("ema_seen", torch.zeros(len(TERMS), dtype=torch.bool))
        self.feature_proj = None
        if self.weights["feature"] > 0:
            self.feature_proj = nn.Conv2d(embed_dim, teacher_dim, 1, bias=True)
        self.region_prototypes = None
        if self.weights["prototypes"] > 0:
            self.region_prototypes = RegionPrototypes(embed_dim, distill.prototypes_k, distill.prototypes_tau,
                                                      distill.prototypes_queue)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("ema", "ema_seen"):  # checkpoints written before a term was added: pad with "not seen"
            old = state_dict.get(prefix + name)
            if old is not None and len(old) < len(TERMS):
                state_dict[prefix + name] = torch.cat([old, torch.zeros(len(TERMS) - len(old), dtype=old.dtype)])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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
                                                 batch_b["geom"], self.contrast_tau,
                                                 self.contrast_neighbours)
        if self.on("prototypes"):
            raw["prototypes"] = self.region_prototypes(out_a["embed"], out_b["embed"], slic, batch_a["geom"],
                                                       batch_b["geom"])
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
