"""Model parts (student encoder, cluster head, smoothing, refiner, decoder) and their factory."""

from segcore.models.cluster_head import SoftKMeansHead
from segcore.models.decoder import TinyReconDecoder
from segcore.models.factory import MODELS, build_decoder, build_segmenter, create_model
from segcore.models.refiner import Refiner
from segcore.models.segmenter import MonolithicSegmenter, upsample_labels
from segcore.models.smoothing import FastSmoothing
from segcore.models.student import RGB_MEAN, RGB_STD, STRIDE, StudentEmbeddingNet, flops_per_image

__all__ = [
    "MODELS",
    "RGB_MEAN",
    "RGB_STD",
    "STRIDE",
    "FastSmoothing",
    "MonolithicSegmenter",
    "Refiner",
    "SoftKMeansHead",
    "StudentEmbeddingNet",
    "TinyReconDecoder",
    "build_decoder",
    "build_segmenter",
    "create_model",
    "flops_per_image",
    "upsample_labels",
]
