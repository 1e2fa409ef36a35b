"""Loss families (one per module) and the composite that weights and balances them."""

from segcore.losses.composite import TERMS, CompositeLoss, build_loss, term_weights
from segcore.losses.contrastive import pool_superpixels, pool_views, superpixel_infonce
from segcore.losses.descriptor_affinity import descriptor_affinity
from segcore.losses.descriptors import region_descriptors
from segcore.losses.distill import affinity_loss, cluster_loss, feature_loss, sharpened_target
from segcore.losses.prototypes import RegionPrototypes, sinkhorn_codes, swapped_prototype_loss
from segcore.losses.recon import gaussian_blur, recon_losses, recon_target, sobel_magnitude
from segcore.losses.slic_prior import edge_aware_tv, edge_strength, slic_pull_loss, slic_push_loss
from segcore.losses.unsupervised import (
    consistency_loss,
    entropy_loss,
    marginal_loss,
    smoothness_loss,
    symmetric_kl,
)

__all__ = [
    "TERMS",
    "CompositeLoss",
    "RegionPrototypes",
    "affinity_loss",
    "build_loss",
    "cluster_loss",
    "consistency_loss",
    "descriptor_affinity",
    "edge_aware_tv",
    "edge_strength",
    "entropy_loss",
    "feature_loss",
    "gaussian_blur",
    "marginal_loss",
    "pool_superpixels",
    "pool_views",
    "recon_losses",
    "recon_target",
    "region_descriptors",
    "sharpened_target",
    "sinkhorn_codes",
    "slic_pull_loss",
    "slic_push_loss",
    "smoothness_loss",
    "sobel_magnitude",
    "superpixel_infonce",
    "swapped_prototype_loss",
    "symmetric_kl",
    "term_weights",
]
