"""Numpy-only inference from an export directory (``model.npz`` + ``meta.json`` + ``metrics.json``).

This module never imports torch (``docs/export-format.md`` documents the files). It reproduces the
inference path of :class:`segcore.models.segmenter.MonolithicSegmenter` step by step:

* :meth:`NumpyModel.embed` -- student (normalise, replicate-pad to a multiple of 4, conv/norm/ReLU
  blocks, 1x1 out), optional 1x1 projection, L2 normalisation: ``(H, W, 3)`` -> ``(E, h, w)``;
* :meth:`NumpyModel.fit_prototypes` -- deterministic farthest-point init + soft k-means;
* :meth:`NumpyModel.assign` -- logits, optional refiner, softmax, smoothing lane, x4 bilinear
  upsampling and argmax;
* :meth:`NumpyModel.segment` -- all of it for one in-memory image.

Convolutions are im2col (``sliding_window_view``, copied one chunk of output rows at a time into a
reused buffer) followed by one float32 BLAS matmul per chunk; activations are kept ``(H, W, C)``.

GroupNorm normalises with statistics of the whole input. :meth:`NumpyModel.norm_stats` measures
them jointly over a list of images (e.g. sample windows of a large raster), and ``embed(...,
stats=...)`` reuses such frozen statistics, which makes every norm a per-pixel affine map: this is
how :mod:`segcore.predict` gets identical results whatever the tile size.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from segcore.errors import ArtifactError

FORMAT = "segcore-export"
FORMAT_VERSION = 1
FILES = ("model.npz", "meta.json", "metrics.json")
STRIDE = 4
EPS = 1e-12
CHUNK_PX = 1 << 14  # output pixels per im2col chunk (bounded buffer: CHUNK_PX * 9 * C floats)

#: Per norm layer: ``(group_mean (G,), group_var (G,))`` float64 statistics.
NormStats = list[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Layer:
    """One conv of the inference path (``prefix`` names its arrays in ``model.npz``)."""

    prefix: str
    cin: int
    cout: int
    kernel: int
    stride: int
    norm: bool
    residual: bool
    relu: bool
    groups: int = 1
    dilation: int = 1


def student_layers(meta: dict[str, Any]) -> list[Layer]:
    """The student's convs in order, from ``meta`` (``width``, ``depth``, ``student_embed_dim``)."""
    width, norm, g = int(meta["width"]), meta["norm"]["type"] == "group", int(meta["norm"]["groups"])
    layers = [Layer("student.stem1", 3, width // 2, 3, 2, norm, False, True, math.gcd(g, width // 2)),
              Layer("student.stem2", width // 2, width, 3, 2, norm, False, True, math.gcd(g, width))]
    dilations = meta.get("dilations") or [1] * int(meta["depth"])
    layers += [Layer(f"student.blocks.{i}", width, width, 3, 1, norm, True, True, math.gcd(g, width), int(d))
               for i, d in enumerate(dilations)]
    layers.append(Layer("student.out", width, int(meta["student_embed_dim"]), 1, 1, False, False, False, width))
    return layers


def expected_arrays(meta: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every array name ``model.npz`` must hold for ``meta``, with its shape (the schema)."""
    shapes: dict[str, tuple[int, ...]] = {"student.mean": (3,), "student.std": (3,)}
    for layer in student_layers(meta):
        shapes[f"{layer.prefix}.conv.weight" if layer.kernel == 3 else f"{layer.prefix}.weight"] = (
            layer.cout, layer.cin, layer.kernel, layer.kernel)
        if layer.kernel == 3 or meta.get("out_bias", True):
            shapes[f"{layer.prefix}.conv.bias" if layer.kernel == 3 else f"{layer.prefix}.bias"] = (layer.cout,)
        if layer.norm:
            shapes[f"{layer.prefix}.norm.weight"] = shapes[f"{layer.prefix}.norm.bias"] = (layer.cout,)
    e_s, e = int(meta["student_embed_dim"]), int(meta["embed_dim"])
    if e != e_s:
        shapes["proj.weight"], shapes["proj.bias"] = (e, e_s, 1, 1), (e,)
    ref = meta["refiner"]
    if ref["enabled"]:
        g, hid = int(ref["guide_dim"]), int(ref["hidden"])
        shapes.update({"refiner.guide.weight": (g, e, 1, 1), "refiner.guide.bias": (g,),
                       "refiner.conv1.weight": (hid, 1 + g, 3, 3), "refiner.conv1.bias": (hid,),
                       "refiner.conv2.weight": (1, hid, 3, 3), "refiner.conv2.bias": (1,)})
    return shapes


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1, dilation: int = 1) -> np.ndarray:
    """Zero-padded ('same' for stride 1) convolution of ``x (H, W, C)`` float32.

    ``dilation`` > 1 (stride 1 only): taps ``dilation`` pixels apart, zero padding of ``dilation``.

    Args:
        w: ``(k*k*C, O)`` weights ordered ``(kh, kw, C)`` (see :func:`im2col_weight`).
        b: ``(O,)`` bias.
    Returns:
        ``(Ho, Wo, O)`` float32 with ``Ho = (H + 2p - k) // stride + 1``, ``p = k // 2``.
    """
    h, wd, c = x.shape
    k = math.isqrt(w.shape[0] // c)
    o = w.shape[1]
    if k == 1:
        xs = x[::stride, ::stride] if stride > 1 else x
        out = xs.reshape(-1, c) @ w
        out += b
        return out.reshape(xs.shape[0], xs.shape[1], o)
    if dilation > 1:
        return _conv2d_dilated(x, w, b, k, dilation)
    p = k // 2
    ho, wo = (h + 2 * p - k) // stride + 1, (wd + 2 * p - k) // stride + 1
    xp = np.pad(x, ((p, p), (p, p), (0, 0))).reshape(h + 2 * p, (wd + 2 * p) * c)  # rows of (W * C)
    out = np.empty((ho, wo, o), np.float32)
    rows = max(1, CHUNK_PX // wo)
    buf = np.empty((min(rows, ho) * wo, k * k * c), np.float32)
    for r0 in range(0, ho, rows):
        r1 = min(ho, r0 + rows)
        n = r1 - r0
        src = xp[r0 * stride : (r1 - 1) * stride + k]
        # Windows of k rows x (k * C) contiguous floats: patch order (kh, kw, C), long inner runs.
        win = sliding_window_view(src, (k, k * c), axis=(0, 1))[::stride, : wo * stride * c : stride * c]
        cols = buf[: n * wo]
        cols.reshape(n, wo, k, k * c)[...] = win
        np.matmul(cols, w, out=out[r0:r1].reshape(n * wo, o))
    out += b
    return out


def _conv2d_dilated(x: np.ndarray, w: np.ndarray, b: np.ndarray, k: int, d: int) -> np.ndarray:
    """Stride-1 'same' convolution with dilation ``d``: im2col from ``k*k`` shifted views, chunked by rows."""
    h, wd, c = x.shape
    o, p = w.shape[1], d * (k // 2)
    xp = np.pad(x, ((p, p), (p, p), (0, 0)))
    out = np.empty((h, wd, o), np.float32)
    rows = max(1, CHUNK_PX // wd)
    buf = np.empty((min(rows, h), wd, k * k * c), np.float32)
    for r0 in range(0, h, rows):
        n = min(h, r0 + rows) - r0
        cols = buf[:n]
        for i in range(k):
            for j in range(k):
                t = i * k + j
                cols[:, :, t * c : (t + 1) * c] = xp[r0 + i * d : r0 + i * d + n, j * d : j * d + wd]
        np.matmul(cols.reshape(n * wd, k * k * c), w, out=out[r0 : r0 + n].reshape(n * wd, o))
    out += b
    return out


def im2col_weight(w: np.ndarray) -> np.ndarray:
    """Torch conv weight ``(O, C, k, k)`` -> ``(k*k*C, O)`` float32 contiguous, as :func:`conv2d` takes."""
    o, c, kh, kw = w.shape
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(kh * kw * c, o), dtype=np.float32)


def _group_stats(ys: list[np.ndarray], groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Group mean and variance (float64, ``(G,)``) jointly over the ``(H, W, C)`` maps in ``ys``."""
    c = ys[0].shape[-1]
    s1, s2, n = np.zeros(c), np.zeros(c), 0
    for y in ys:
        flat = y.reshape(-1, c)
        for start in range(0, flat.shape[0], 1 << 16):
            part = flat[start : start + (1 << 16)].astype(np.float64)
            s1 += part.sum(0)
            s2 += np.einsum("nc,nc->c", part, part)
        n += flat.shape[0]
    mean = s1.reshape(groups, -1).sum(1) / (n * (c // groups))
    var = s2.reshape(groups, -1).sum(1) / (n * (c // groups)) - mean**2
    return mean, np.maximum(var, 0.0)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """Numerically stable softmax, float32."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def sample_stride(h: int, w: int, max_samples: int) -> int:
    """Smallest ``s >= 1`` with ``ceil(h/s) * ceil(w/s) <= max_samples`` (as the torch head)."""
    s = 1
    while (-(-h // s)) * (-(-w // s)) > max_samples:
        s += 1
    return s


def farthest_point_init(samples: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    """``(k,)`` indexes into ``samples (N, E)`` picked by cosine farthest-point sampling (valid only)."""
    mean = (samples * valid[:, None].astype(np.float32)).sum(0)
    low = np.finfo(np.float32).min
    idx = [int(np.argmax(np.where(valid, samples @ mean, low)))]
    min_dist = 1.0 - samples @ samples[idx[0]]
    for _ in range(k - 1):
        nxt = int(np.argmax(np.where(valid, min_dist, low)))
        idx.append(nxt)
        min_dist = np.minimum(min_dist, 1.0 - samples @ samples[nxt])
    return np.asarray(idx, dtype=np.int64)


def smooth(probs: np.ndarray, iters: int, alpha: float) -> np.ndarray:
    """Smoothing lane on ``probs (K, h, w)``: ``iters`` replicate-padded 3x3 averages, renormalised."""
    if iters == 0 or alpha == 0.0:
        return probs
    p = probs
    h, w = p.shape[1:]
    for _ in range(iters):
        q = np.pad(p, ((0, 0), (1, 1), (1, 1)), mode="edge")
        acc = np.zeros_like(p)
        for dy in range(3):
            for dx in range(3):
                acc += q[:, dy : dy + h, dx : dx + w]
        p = (1.0 - alpha) * p + alpha * (acc / 9.0)
    return p / np.maximum(p.sum(0, keepdims=True), 1e-12)


def _bilinear_taps(n: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source taps of an x4 ``align_corners=False`` upsampling of ``n`` cells to ``out`` pixels."""
    return coordinate_taps(n, (np.arange(out, dtype=np.float64) + 0.5) / STRIDE - 0.5)


def coordinate_taps(n: int, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear-interpolation taps ``(i0, i1, lambda)`` of ``n`` cells at continuous cell ``coords``.

    Cell ``j`` has its centre at coordinate ``j``; coordinates outside ``0..n-1`` take the edge
    cell (as ``align_corners=False`` upsampling does).
    """
    src = np.clip(np.asarray(coords, dtype=np.float64), 0.0, n - 1)
    i0 = np.minimum(np.floor(src).astype(np.int64), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    lam = (src - i0).astype(np.float32)
    return i0, i1, lam


def upsample_argmax(probs: np.ndarray, out_h: int, out_w: int, rows: int = 64) -> np.ndarray:
    """``probs (K, h, w)`` -> ``int64 (out_h, out_w)`` argmax of the x4 bilinear upsampling (cropped)."""
    h, w = probs.shape[1:]
    return resample_argmax(probs, _bilinear_taps(h, out_h), _bilinear_taps(w, out_w), rows)


def resample_argmax(probs: np.ndarray, row_taps: tuple, col_taps: tuple, rows: int = 64) -> np.ndarray:
    """Argmax of ``probs (K, h, w)`` bilinearly resampled at the pixels given by their taps.

    ``row_taps``/``col_taps`` come from :func:`coordinate_taps` (one entry per output row/column).
    Interpolates along W then H (the association torch uses) one block of output rows and one
    cluster at a time, keeping a running maximum; ties keep the lowest cluster id.
    """
    k = probs.shape[0]
    c0, c1, cl = col_taps
    r0, r1, rl = row_taps
    out_h, out_w = len(r0), len(c0)
    pw = probs[:, :, c0] * (1.0 - cl) + probs[:, :, c1] * cl  # (K, h, out_w)
    labels = np.zeros((out_h, out_w), np.int64)
    best, cur, tmp = (np.empty((rows, out_w), np.float32) for _ in range(3))
    for a in range(0, out_h, rows):
        b = min(out_h, a + rows)
        n, lo, hi = b - a, (1.0 - rl[a:b])[:, None], rl[a:b][:, None]
        for kk in range(k):
            c = cur[:n] if kk else best[:n]
            np.multiply(pw[kk][r0[a:b]], lo, out=c)
            np.multiply(pw[kk][r1[a:b]], hi, out=tmp[:n])
            c += tmp[:n]
            if kk:
                np.copyto(labels[a:b], kk, where=c > best[:n])
                np.maximum(best[:n], c, out=best[:n])
    return labels


class NumpyModel:
    """The exported inference path as numpy arrays; build it with :func:`load_export`."""

    def __init__(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]):
        self.meta = meta
        self.max_k, self.embed_dim = int(meta["max_k"]), int(meta["embed_dim"])
        self.temperature, self.iters = float(meta["temperature"]), int(meta["cluster_iters"])
        self.refine_temperature = float(meta.get("refine_temperature", meta["temperature"]))
        self.centre = bool(meta.get("centre", False))
        self.init_samples = int(meta["init_samples"])
        self.layers = student_layers(meta)
        self.mean = arrays["student.mean"].reshape(1, 1, 3)
        self.std = arrays["student.std"].reshape(1, 1, 3)
        self.scale = float(meta["input"]["scale"])
        self.w: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for layer in self.layers:
            key = f"{layer.prefix}.conv" if layer.kernel == 3 else layer.prefix
            bias = arrays.get(f"{key}.bias", np.zeros(layer.cout, np.float32))
            self.w[layer.prefix] = (im2col_weight(arrays[f"{key}.weight"]), bias)
            if layer.norm:
                self.w[f"{layer.prefix}.norm"] = (arrays[f"{layer.prefix}.norm.weight"],
                                                  arrays[f"{layer.prefix}.norm.bias"])
        for name in ("proj", "refiner.guide", "refiner.conv1", "refiner.conv2"):
            if f"{name}.weight" in arrays:
                self.w[name] = (im2col_weight(arrays[f"{name}.weight"]), arrays[f"{name}.bias"])
        self.smooth_iters = int(meta["smoothing"]["iters"]) if meta["smoothing"]["enabled"] else 0
        self.smooth_alpha = float(meta["smoothing"]["alpha"])

    # -- embeddings -------------------------------------------------------------------------------
    def _prepare(self, image: np.ndarray) -> np.ndarray:
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {img.shape}")
        x = img.astype(np.float32) * np.float32(self.scale) if img.dtype == np.uint8 else img.astype(np.float32)
        x = (x - self.mean) / self.std
        h, w = x.shape[:2]
        return np.pad(x, ((0, (-h) % STRIDE), (0, (-w) % STRIDE), (0, 0)), mode="edge")

    def _student(self, xs: list[np.ndarray], stats: NormStats | None) -> tuple[list[np.ndarray], NormStats]:
        used: NormStats = []

        def normalise(ys: list[np.ndarray], groups: int, gamma: np.ndarray, beta: np.ndarray) -> None:
            mean, var = stats[len(used)] if stats is not None else _group_stats(ys, groups)
            used.append((mean, var))
            c = ys[0].shape[-1]
            inv = np.repeat(1.0 / np.sqrt(var + 1e-5), c // groups)
            a = (gamma * inv).astype(np.float32)
            b = (beta - np.repeat(mean, c // groups) * gamma * inv).astype(np.float32)
            for y in ys:
                y *= a
                y += b

        for layer in self.layers:
            if layer.prefix == "student.out" and self.centre:  # per-channel centring, no affine
                normalise(xs, layer.groups, np.ones(layer.cin, np.float32), np.zeros(layer.cin, np.float32))
            wt, bias = self.w[layer.prefix]
            ys = [conv2d(x, wt, bias, layer.stride, layer.dilation) for x in xs]
            if layer.norm:
                normalise(ys, layer.groups, *self.w[f"{layer.prefix}.norm"])
            for x, y in zip(xs, ys, strict=True):
                if layer.residual:
                    y += x
                if layer.relu:
                    np.maximum(y, 0.0, out=y)
            xs = ys
        return xs, used

    def _embed_hwc(self, images: list[np.ndarray], stats: NormStats | None) -> tuple[list[np.ndarray], NormStats]:
        xs, used = self._student([self._prepare(im) for im in images], stats)
        out = []
        for x in xs:
            if "proj" in self.w:
                x = conv2d(x, *self.w["proj"])
            x /= np.maximum(np.sqrt(np.einsum("hwc,hwc->hw", x, x)), EPS)[..., None]
            out.append(x)
        return out, used

    def embed(self, image: np.ndarray, stats: NormStats | None = None) -> np.ndarray:
        """``image (H, W, 3)`` (uint8 0..255, or float 0..1) -> L2-normalised ``(E, ceil(H/4), ceil(W/4))``.

        ``stats``: frozen GroupNorm statistics from :meth:`norm_stats`; default: this image's own.
        """
        return np.ascontiguousarray(self._embed_hwc([image], stats)[0][0].transpose(2, 0, 1))

    def norm_stats(self, images: list[np.ndarray]) -> NormStats:
        """GroupNorm statistics measured jointly over ``images`` (each ``(H, W, 3)``), layer by layer."""
        if not self.centre and not any(layer.norm for layer in self.layers):
            return []
        return self._student([self._prepare(im) for im in images], None)[1]

    def embed_joint(self, images: list[np.ndarray]) -> tuple[list[np.ndarray], NormStats]:
        """Embed ``images`` with GroupNorm statistics measured jointly over all of them.

        Returns the ``(E, h_i, w_i)`` embeddings and the statistics (to reuse with :meth:`embed`).
        """
        zs, stats = self._embed_hwc(images, None)
        return [np.ascontiguousarray(z.transpose(2, 0, 1)) for z in zs], stats

    # -- clustering -------------------------------------------------------------------------------
    def fit_prototypes(self, embeddings: np.ndarray, k: int, valid: np.ndarray | None = None) -> np.ndarray:
        """Soft k-means prototypes ``(k, E)`` float32.

        Args:
            embeddings: ``(E, h, w)`` map (exactly the torch head's algorithm) or ``(N, E)`` sample
                (treated as a ``1 x N`` map).
            k: clusters, ``1..max_k``.
            valid: ``bool`` of shape ``(h, w)`` or ``(N,)``; invalid embeddings never shape prototypes.
        """
        if not 1 <= k <= self.max_k:
            raise ValueError(f"k={k} must be within 1..max_k={self.max_k}")
        if embeddings.ndim == 3:
            e, h, w = embeddings.shape
            flat = embeddings.reshape(e, -1).T
        else:
            (h, w), flat = (1, embeddings.shape[0]), embeddings
        flat = np.ascontiguousarray(flat, dtype=np.float32)
        vmask = np.ones(h * w, bool) if valid is None else np.asarray(valid, bool).reshape(-1)
        s = sample_stride(h, w, self.init_samples)
        grid = np.arange(h * w).reshape(h, w)[::s, ::s].reshape(-1)
        protos = flat[grid[farthest_point_init(flat[grid], vmask[grid], k)]]
        weights = vmask.astype(np.float32)[:, None]
        for _ in range(self.iters):
            p = softmax(flat @ protos.T / np.float32(self.refine_temperature), axis=1) * weights  # (N, K)
            protos = p.T @ flat
            protos /= np.maximum(np.linalg.norm(protos, axis=1, keepdims=True), EPS)
        return protos.astype(np.float32)

    def assign(self, embed: np.ndarray, prototypes: np.ndarray, out_hw: tuple[int, int] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Assign ``embed (E, h, w)`` to ``prototypes (K, E)``.

        Returns ``probs (K, h, w)`` float32 (after refiner, softmax and smoothing) and ``labels``
        int64 ``out_hw`` (default ``(4h, 4w)``) with values ``0..K-1``.
        """
        h, w = embed.shape[1:]
        probs = self.probabilities(embed, prototypes)
        out_h, out_w = out_hw if out_hw is not None else (STRIDE * h, STRIDE * w)
        return probs, upsample_argmax(probs, out_h, out_w)

    def probabilities(self, embed: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
        """``probs (K, h, w)`` float32 of ``embed (E, h, w)`` on ``prototypes (K, E)``.

        Cosine logits over the temperature, the optional refiner, softmax and the smoothing lane.
        """
        e, h, w = embed.shape
        protos = prototypes / np.maximum(np.linalg.norm(prototypes, axis=1, keepdims=True), EPS)
        logits = (protos.astype(np.float32) @ embed.reshape(e, -1)) / np.float32(self.temperature)
        logits = logits.reshape(-1, h, w)
        if "refiner.guide" in self.w:
            logits = self._refine(logits, embed)
        return smooth(softmax(logits, axis=0), self.smooth_iters, self.smooth_alpha).astype(np.float32)

    def _refine(self, logits: np.ndarray, embed: np.ndarray) -> np.ndarray:
        g = conv2d(np.ascontiguousarray(embed.transpose(1, 2, 0)), *self.w["refiner.guide"])  # (h, w, G)
        out = np.empty_like(logits)
        for k in range(logits.shape[0]):
            x = np.concatenate([logits[k][..., None], g], axis=2)
            hidden = conv2d(x, *self.w["refiner.conv1"])
            np.maximum(hidden, 0.0, out=hidden)
            out[k] = logits[k] + conv2d(hidden, *self.w["refiner.conv2"])[..., 0]
        return out

    def segment(self, image: np.ndarray, k: int | None = None, valid: np.ndarray | None = None) -> np.ndarray:
        """``image (H, W, 3)`` -> cluster ids ``int64 (H, W)`` in ``0..k-1`` (``k`` default ``max_k``).

        ``valid``: optional ``bool (H, W)``; invalid pixels do not shape the prototypes (their
        labels are still computed), as in the torch model.
        """
        h, w = np.asarray(image).shape[:2]
        z = self.embed(image)
        v = None if valid is None else np.asarray(valid, bool)[::STRIDE, ::STRIDE][: z.shape[1], : z.shape[2]]
        protos = self.fit_prototypes(z, self.max_k if k is None else int(k), v)
        return self.assign(z, protos, (h, w))[1]

    def receptive_radius(self) -> int:
        """Input pixels on each side that an output label depends on (see ``docs/export-format.md``)."""
        refiner = 8 if "refiner.guide" in self.w else 0
        blocks = sum(layer.dilation for layer in self.layers if layer.prefix.startswith("student.blocks."))
        return 8 + STRIDE * blocks + refiner + STRIDE * self.smooth_iters


def _fail(path: Path, what: str) -> ArtifactError:
    return ArtifactError(f"export {path}: {what}; re-run `segcore export --checkpoint CKPT --out {path}`")


def read_meta(path: str | Path) -> dict[str, Any]:
    """``meta.json`` of an export directory, with its format and version checked."""
    path = Path(path)
    for name in FILES:
        if not (path / name).is_file():
            raise _fail(path, f"{name} is missing (an export holds {', '.join(FILES)})")
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise _fail(path, f"meta.json is unreadable or truncated ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _fail(path, f"meta.json is not a {FORMAT} file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise _fail(path, f"format version {meta.get('format_version')!r}, this segcore reads {FORMAT_VERSION}")
    return meta


def load_export(path: str | Path) -> NumpyModel:
    """Load and validate an export directory into a :class:`NumpyModel` (numpy only).

    Raises :class:`ArtifactError` for a missing file, a truncated ``model.npz``, another format
    version, or an array that is missing or of the wrong shape or dtype.
    """
    path = Path(path)
    meta = read_meta(path)
    try:
        with np.load(path / "model.npz", allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise _fail(path, f"model.npz is unreadable or truncated ({type(exc).__name__}: {exc})") from exc
    try:
        expected = expected_arrays(meta)
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail(path, f"meta.json lacks a required field ({exc})") from exc
    for name, shape in expected.items():
        if name not in arrays:
            raise _fail(path, f"model.npz lacks array {name!r}")
        if arrays[name].shape != shape or arrays[name].dtype != np.float32:
            raise _fail(path, f"array {name!r} is {arrays[name].dtype}{list(arrays[name].shape)}, "
                              f"expected float32{list(shape)}")
    return NumpyModel(meta, arrays)
