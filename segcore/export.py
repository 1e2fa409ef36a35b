"""Export the inference path of a trained segmenter: ``model.npz`` + ``meta.json`` + ``metrics.json``.

Only what inference runs is written (student encoder, optional projection, optional refiner,
normalisation constants; smoothing and clustering are parameter-free and described in
``meta.json``). The decoder, teacher, loss state and optimiser are left out. BatchNorm (eval mode)
is folded into the preceding conv; GroupNorm keeps its affine ``weight``/``bias`` arrays. Every array
is float32 and named by its torch ``state_dict`` key. The format is documented in
``docs/export-format.md`` and read back, with numpy alone, by :func:`segcore.runtime.load_export`.

The three files are written into a temporary sibling directory which is then renamed into place,
so a reader never sees a partial export.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import segcore
from segcore.checkpoint import load_checkpoint
from segcore.codebook import FILE as CODEBOOK_FILE
from segcore.codebook import CodebookRequest
from segcore.config import Config
from segcore.models.segmenter import MonolithicSegmenter
from segcore.models.student import STRIDE
from segcore.runtime import FORMAT, FORMAT_VERSION, expected_arrays, student_layers

log = logging.getLogger(__name__)


def _fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of ``bn(conv(x))`` in eval mode as one conv."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (O,)
    weight = conv.weight * scale[:, None, None, None]
    bias = (conv.bias - bn.running_mean) * scale + bn.bias
    return weight, bias


def model_arrays(model: MonolithicSegmenter) -> dict[str, np.ndarray]:
    """The inference-path arrays of ``model`` under their export names (float32 numpy)."""
    out: dict[str, torch.Tensor] = {}
    student = model.student
    out["student.mean"], out["student.std"] = student.mean.reshape(3), student.std.reshape(3)
    parts = [("student.stem1", student.stem1), ("student.stem2", student.stem2)]
    parts += [(f"student.blocks.{i}", b) for i, b in enumerate(student.blocks)]
    for prefix, block in parts:
        if isinstance(block.norm, nn.BatchNorm2d):
            out[f"{prefix}.conv.weight"], out[f"{prefix}.conv.bias"] = _fold_batchnorm(block.conv, block.norm)
        else:
            out[f"{prefix}.conv.weight"], out[f"{prefix}.conv.bias"] = block.conv.weight, block.conv.bias
            out[f"{prefix}.norm.weight"], out[f"{prefix}.norm.bias"] = block.norm.weight, block.norm.bias
    out["student.out.weight"] = student.out.weight
    if student.out.bias is not None:
        out["student.out.bias"] = student.out.bias
    if model.proj is not None:
        out["proj.weight"], out["proj.bias"] = model.proj.weight, model.proj.bias
    if model.refiner is not None:
        for name in ("guide", "conv1", "conv2"):
            conv = getattr(model.refiner, name)
            out[f"refiner.{name}.weight"], out[f"refiner.{name}.bias"] = conv.weight, conv.bias
    return {k: v.detach().cpu().float().numpy().astype(np.float32) for k, v in out.items()}


def model_meta(model: MonolithicSegmenter, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    """``meta.json`` content for ``model`` built from ``cfg`` (see ``docs/export-format.md``)."""
    s, head = model.student, model.head
    norm = "batch" if isinstance(s.stem1.norm, nn.BatchNorm2d) else "group"
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "max_k": head.max_k,
        "embed_dim": model.embed_dim,
        "student_embed_dim": s.embed_dim,
        "width": s.width,
        "depth": s.depth,
        "dilations": list(getattr(s, "dilations", ())) or [1] * s.depth,
        "temperature": head.temperature,
        "refine_temperature": getattr(head, "refine_temperature", head.temperature),
        "centre": getattr(s, "centre", None) is not None,
        "out_bias": s.out.bias is not None,
        "cluster_iters": head.iters,
        "init_samples": head.init_samples,
        "stride": STRIDE,
        "input": {"channels": "RGB", "scale": 1.0 / 255.0, "mean": s.mean.reshape(3).tolist(),
                  "std": s.std.reshape(3).tolist(), "pad": "edge, bottom/right, to a multiple of 4"},
        "norm": {"type": norm, "groups": cfg.student.groups, "eps": 1e-5, "batchnorm_folded": norm == "batch"},
        "smoothing": {"enabled": model.smoothing is not None,
                      "iters": model.smoothing.iters if model.smoothing is not None else 0,
                      "alpha": model.smoothing.alpha if model.smoothing is not None else 0.0},
        "refiner": {"enabled": model.refiner is not None,
                    "guide_dim": model.refiner.guide_dim if model.refiner is not None else 0,
                    "hidden": model.refiner.hidden if model.refiner is not None else 0},
        "config_hash": cfg.hash(),
        "config": cfg.to_dict(),
        "segcore_version": segcore.__version__,
        "source_run_id": run_id,
        # The grid the model was trained on and predicts on (segcore.data.raster): metres per pixel.
        "working_resolution": {"gsd": cfg.data.gsd, "min_side": cfg.data.min_side,
                               "source_gsd": cfg.data.source_gsd},
    }
    meta["layers"] = [
        {"name": layer.prefix, "in": layer.cin, "out": layer.cout, "kernel": layer.kernel, "stride": layer.stride,
         "padding": layer.dilation * (layer.kernel // 2), "dilation": layer.dilation,
         "norm": norm if layer.kernel == 3 else None,
         "groups": layer.groups if norm == "group" and layer.kernel == 3 else None,
         "residual": layer.residual, "relu": layer.relu}
        for layer in student_layers(meta)
    ]
    meta["arrays"] = {name: list(shape) for name, shape in expected_arrays(meta).items()}
    return meta


def _write_set(out_dir: Path, files: dict[str, bytes | np.ndarray | dict]) -> None:
    """Write ``files`` as the export ``out_dir``, holding its lock (``segcore.safety``).

    Refuses (OutputError) an ``out_dir`` that exists and is not an export segcore wrote, and
    (BusyError) one that another process is writing; nothing else is ever replaced.
    """
    from segcore.safety import replacing_dir

    with replacing_dir(out_dir, "export", what="export directory") as tmp:
        for name, content in files.items():
            if name.endswith(".npz"):
                with open(tmp / name, "wb") as fh:
                    np.savez(fh, **content)
            elif isinstance(content, bytes):
                (tmp / name).write_bytes(content)
            else:
                (tmp / name).write_text(json.dumps(content, indent=2, sort_keys=True))


def export_model(
    model: MonolithicSegmenter,
    cfg: Config,
    out_dir: str | Path,
    *,
    run_id: str | None = None,
    metrics: dict[str, Any] | None = None,
    codebook: CodebookRequest | None = None,
    onnx: bool = False,
) -> Path:
    """Write the export of an in-memory ``model`` (built from ``cfg``) to ``out_dir``; return it.

    ``metrics`` (e.g. ``best_loss``, ``step``, ``val/miou``) go to ``metrics.json`` as they are.
    ``codebook``: also fit a dataset codebook (``codebook.npz``, see :mod:`segcore.codebook`) on the
    training data of ``cfg``; ``onnx``: also write ``model.onnx`` (needs the codebook and the
    ``onnx`` extra, see :mod:`segcore.onnx_export`).
    """
    model = model.eval()
    meta = model_meta(model, cfg, run_id)
    arrays = model_arrays(model)
    out = Path(out_dir)
    files: dict[str, Any] = {"model.npz": arrays, "metrics.json": dict(metrics or {}), "meta.json": meta}
    if codebook is not None:
        from segcore.codebook_sources import export_codebook

        files[CODEBOOK_FILE], fitted = export_codebook(meta, arrays, cfg, codebook)
        if onnx:
            from segcore.onnx_export import onnx_bytes

            files["model.onnx"] = onnx_bytes(model, meta, fitted)  # also records meta["onnx"]
    elif onnx:
        raise ValueError("an ONNX export needs a codebook (its fixed head); do not combine onnx with no codebook")
    _write_set(out, files)
    log.info("exported %d arrays (%.1f kB) to %s", len(arrays), sum(a.nbytes for a in arrays.values()) / 1e3, out)
    return out


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    run_id: str | None = None,
    eval_metrics: dict[str, float] | None = None,
    codebook: CodebookRequest | None = CodebookRequest(),
    onnx: bool = False,
) -> Path:
    """Export a training checkpoint (``checkpoints/last.pt``) to ``out_dir``.

    ``metrics.json`` holds ``best_loss``, ``best_step``, ``step`` and ``eval_metrics`` if given.
    A codebook is fitted by default (``codebook=None`` skips it); ``onnx`` also writes ``model.onnx``.
    Raises :class:`~segcore.errors.ArtifactError` when the checkpoint cannot be read.
    """
    from segcore.models import build_segmenter

    state = load_checkpoint(checkpoint)
    cfg = Config.from_dict(state["config"])
    model = build_segmenter(cfg)
    model.load_state_dict(state["model"])
    best = float(state.get("best_loss", math.inf))
    metrics = {"best_loss": best if math.isfinite(best) else None, "best_step": int(state.get("best_step", -1)),
               "step": int(state.get("step", -1)), "checkpoint": str(checkpoint)}
    metrics.update(eval_metrics or {})
    return export_model(model, cfg, out_dir, run_id=run_id, metrics=metrics, codebook=codebook, onnx=onnx)
