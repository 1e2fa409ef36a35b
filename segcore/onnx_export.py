"""``model.onnx``: the inference path with the dataset codebook as a fixed head, for QGIS plugins.

The graph is exported by ``torch.onnx.export`` from :class:`CodebookSegmenter`, a wrapper around
the trained :class:`~segcore.models.segmenter.MonolithicSegmenter` itself (so a change to the
model carries into the ONNX file), in which

* every GroupNorm of the student (and its centring step) is replaced by :class:`FrozenNorm`, the
  per-pixel affine map with the codebook's dataset statistics (what :mod:`segcore.predict` and the
  numpy runtime do in codebook mode), so the output does not depend on the tile a plugin cuts;
* the cluster head assigns to the codebook's fixed prototypes (no per-image fitting);
* the cluster probabilities ``(N, K, H/4, W/4)`` are upsampled x4 (bilinear, ``align_corners=False``,
  cropped), the same interpolation the numpy runtime's labels use.

Input ``image``: ``(N, 3, H, W)`` float32 RGB scaled to 0..1 (the model normalises with its own
ImageNet mean/std inside); ``H`` and ``W`` are dynamic. Output ``probabilities``: ``(N, K, H, W)``
float32, summing to 1 over ``K``; class ``i + 1`` of the codebook is channel ``i``. The metadata a
plugin reads (Deepness: ``model_type``, ``class_names``, ``resolution``, ``tiles_size``,
``tiles_overlap``, ``standardization_mean``/``std``) goes into ``metadata_props`` (:func:`onnx_metadata`).

Needs the ``onnx`` extra (``pip install 'segcore[onnx]'``: onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segcore.codebook import Codebook
from segcore.errors import SegcoreError
from segcore.models.segmenter import MonolithicSegmenter
from segcore.models.student import STRIDE

log = logging.getLogger(__name__)

OPSET = 18
INPUT, OUTPUT = "image", "probabilities"
TILE_SIZE = 512
TILE_OVERLAP = 15  # percent: Deepness's overlap between tiles; more than the receptive radius at 512 px


class OnnxMissingError(SegcoreError):
    """The ``onnx`` extra is not installed."""


def require_onnx() -> None:
    """Raise :class:`OnnxMissingError` naming the extra when onnx/onnxruntime/onnxscript are missing."""
    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise OnnxMissingError(f"ONNX export needs {', '.join(missing)}: pip install 'segcore[onnx]'")


class FrozenNorm(nn.Module):
    """A GroupNorm with frozen statistics: ``x * scale + shift`` per channel (a per-pixel affine map).

    ``scale = gamma / sqrt(var_g + eps)`` and ``shift = beta - mean_g * scale`` with the group
    statistics repeated over each group's channels (computed in float64, stored float32).
    """

    def __init__(self, norm: nn.GroupNorm, mean: np.ndarray, var: np.ndarray):
        super().__init__()
        c, g = norm.num_channels, norm.num_groups
        mean_c = np.repeat(np.asarray(mean, np.float64), c // g)
        inv = np.repeat(1.0 / np.sqrt(np.asarray(var, np.float64) + norm.eps), c // g)
        gamma = norm.weight.detach().double().numpy() if norm.affine else np.ones(c)
        beta = norm.bias.detach().double().numpy() if norm.affine else np.zeros(c)
        scale = gamma * inv
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("shift", torch.tensor(beta - mean_c * scale, dtype=torch.float32).view(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def freeze_norms(model: MonolithicSegmenter, codebook: Codebook) -> MonolithicSegmenter:
    """A copy of ``model`` whose student GroupNorms use the codebook's frozen statistics.

    The statistics are in the numpy runtime's order: the norm of each conv block (stem1, stem2,
    blocks...), then the centring step.
    """
    frozen = copy.deepcopy(model).eval()
    s = frozen.student
    norms: list[tuple[nn.Module, str]] = [(b, "norm") for b in (s.stem1, s.stem2, *s.blocks)
                                          if isinstance(b.norm, nn.GroupNorm)]
    if isinstance(getattr(s, "centre", None), nn.GroupNorm):
        norms.append((s, "centre"))
    if len(norms) != len(codebook.stats):
        raise ValueError(f"the model has {len(norms)} GroupNorms, the codebook {len(codebook.stats)} statistics")
    for (owner, name), (mean, var) in zip(norms, codebook.stats, strict=True):
        setattr(owner, name, FrozenNorm(getattr(owner, name), mean, var))
    return frozen


class CodebookSegmenter(nn.Module):
    """``image (N, 3, H, W)`` in 0..1 -> ``probabilities (N, K, H, W)`` on the codebook's prototypes."""

    def __init__(self, model: MonolithicSegmenter, codebook: Codebook):
        super().__init__()
        self.model = freeze_norms(model, codebook)
        self.register_buffer("prototypes", torch.from_numpy(codebook.prototypes.astype(np.float32))[None])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        # Replicate-pad to a multiple of 4 here, unconditionally (what the student does after its
        # per-pixel normalisation): the student's own `if` on the padding would be fixed at export
        # time by the example's size.
        image = F.pad(image, (0, (-w) % STRIDE, 0, (-h) % STRIDE), mode="replicate")  # (N, 3, 4h', 4w')
        probs = self.model(image, prototypes=self.prototypes)["probs"]  # (N, K, ceil(H/4), ceil(W/4))
        up = F.interpolate(probs, scale_factor=STRIDE, mode="bilinear", align_corners=False)
        return up[:, :, :h, :w]  # (N, K, H, W)


def onnx_metadata(meta: dict[str, Any], class_names: list[str]) -> dict[str, str]:
    """``metadata_props`` for Deepness and other readers (all values are strings, JSON where structured)."""
    gsd = (meta.get("working_resolution") or {}).get("gsd") or 0.0
    props = {
        "model_type": "Segmentor",
        "class_names": json.dumps({str(i): name for i, name in enumerate(class_names)}),
        "tiles_size": str(TILE_SIZE),
        "tiles_overlap": str(TILE_OVERLAP),
        # The graph takes RGB in 0..1 and applies the model's own mean/std inside: plugins pass 0..1.
        "standardization_mean": json.dumps([0.0, 0.0, 0.0]),
        "standardization_std": json.dumps([1.0, 1.0, 1.0]),
        "input": "image (N, 3, H, W) float32 RGB scaled to 0..1 (8-bit values / 255); H, W dynamic",
        "output": "probabilities (N, K, H, W) float32, softmax over K; channel i is class i + 1 of class_names",
        "normalisation": json.dumps({"inside_graph": True, "scale": 1.0 / 255.0,
                                     "mean": meta["input"]["mean"], "std": meta["input"]["std"]}),
        "segcore_format_version": str(meta.get("format_version")),
        "segcore_config_hash": str(meta.get("config_hash")),
        "codebook": json.dumps({k: meta["codebook"][k] for k in ("k", "seed", "init", "samples", "source")}),
    }
    if gsd > 0:
        props["resolution"] = f"{gsd * 100:g}"  # cm per pixel, as Deepness expects
    return props


def onnx_bytes(model: MonolithicSegmenter, meta: dict[str, Any], codebook: Codebook) -> bytes:
    """Serialised ``model.onnx`` for ``model`` with ``codebook``; records ``meta["onnx"]``."""
    require_onnx()
    import onnx

    wrapper = CodebookSegmenter(model, codebook).eval()
    example = torch.rand(1, 3, 64, 72)
    dims = {"image": {0: torch.export.Dim("batch", max=1024), 2: torch.export.Dim("height", min=8, max=16384),
                      3: torch.export.Dim("width", min=8, max=16384)}}
    buf = io.BytesIO()
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)  # "torchvision is not installed" lines: we use no torchvision op
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # torch's own pytree deprecation inside the exporter (torch 2.13), not ours to fix.
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            program = torch.onnx.export(wrapper, (example,), input_names=[INPUT], output_names=[OUTPUT],
                                        dynamic_shapes=dims, opset_version=OPSET, dynamo=True, verbose=False)
    finally:
        registration.setLevel(level)
    proto = program.model_proto
    class_names = list(meta["class_names"])
    for key, value in onnx_metadata(meta, class_names).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    buf.write(proto.SerializeToString())
    meta["onnx"] = {"file": "model.onnx", "opset": OPSET, "input": INPUT, "output": OUTPUT,
                    "metadata": sorted(onnx_metadata(meta, class_names))}
    log.info("ONNX graph: %d nodes, %.1f kB", len(proto.graph.node), buf.tell() / 1e3)
    return buf.getvalue()
