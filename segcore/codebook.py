"""A dataset codebook: one set of prototypes (and frozen norm statistics) for every raster.

Per-raster prediction fits new prototypes for every raster, so cluster 3 can be water in one raster
and forest in the next. A codebook is fitted once, at export, on embeddings sampled from the
training data, and stored in the export (``codebook.npz`` + ``meta.json["codebook"]``):

* **Frozen norm statistics.** The student's GroupNorm layers (and its centring step) normalise with
  statistics of the input they see. The codebook measures them once, jointly over all sample
  windows (:meth:`NumpyModel.norm_stats`), and every later embedding reuses them, so every norm is
  a fixed per-pixel affine map: an embedding depends only on the input pixels within the receptive
  radius. Two rasters cut from one scene then give the same ids on their overlap, tiles never
  matter, and the ONNX graph (:mod:`segcore.onnx_export`) is a fixed function of its input.
* **Prototypes.** ``k`` unit vectors fitted by spherical k-means on the embedded sample windows:
  k-means++ seeding (``D^2`` sampling on ``1 - cos``, a seeded ``numpy`` generator, ``restarts``
  seedings, the one with the best mean cosine kept), then Lloyd iterations (assign to the nearest
  prototype by cosine, prototype = normalised mean) until no assignment changes or ``iters``.
  Seed, restarts, iterations, sample counts and the source are recorded in ``meta.json``.

Prediction with a codebook is :func:`segcore.runtime.NumpyModel.embed` with ``stats`` followed by
:meth:`~segcore.runtime.NumpyModel.assign` to the codebook's prototypes (class ``i`` = prototype
``i - 1``, 0 = nodata).

Sample windows (``side`` pixels, origins multiples of 4) come from, in order of preference: the
published training shards (``<data.processed_root>/<data.dataset>``, split ``data.split``), the
input rasters of the config (``data.manifest`` / ``data.raster_paths``), or generated synthetic
scenes for ``data.source=synthetic``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segcore.errors import ArtifactError, ConfigError
from segcore.runtime import STRIDE, NormStats, NumpyModel

log = logging.getLogger(__name__)

FILE = "codebook.npz"
DEFAULT_K = 8


@dataclass(frozen=True)
class CodebookRequest:
    """How to fit a codebook at export time.

    Args:
        k: prototypes (classes) in the codebook, ``1..255`` (independent of the head's ``max_k``);
            0: one per class name when names are given, else :data:`DEFAULT_K`.
        seed: seed of the window sampling and of the k-means++ seeding.
        windows: sample windows embedded jointly (they also give the frozen norm statistics).
        side: side of a sample window in pixels (a multiple of 4).
        samples: embedding cells (at most) the k-means sees, drawn from all windows.
        restarts: k-means++ seedings; the fit with the highest mean cosine is kept.
        iters: Lloyd iterations at most per seeding.
        source: ``"auto"`` (shards, else the config's rasters, else synthetic scenes), ``"shards"``,
            ``"synthetic"``, or rasters (a file, a directory, a glob, or a manifest CSV).
        class_names: names of classes ``1..k`` (default ``class 1`` .. ``class k``).
        merge_from: fit this many prototypes (more than ``k``) and group them into ``k`` classes
            by how often they sit side by side in the sample windows (:func:`adjacency_groups`;
            label-free); the export then names every prototype after its group, so predict
            merges them (ids named alike are one class). 0: off, ``k`` prototypes.
    """

    k: int = 0
    seed: int = 0
    windows: int = 48
    side: int = 256
    samples: int = 65536
    restarts: int = 4
    iters: int = 50
    source: str = "auto"
    class_names: tuple[str, ...] = field(default_factory=tuple)
    merge_from: int = 0


@dataclass(frozen=True)
class Codebook:
    """Fitted codebook: ``prototypes (k, E)`` float32 unit rows, frozen ``stats``, and its record."""

    prototypes: np.ndarray
    stats: NormStats
    record: dict[str, Any]

    @property
    def k(self) -> int:
        return int(self.prototypes.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays of ``codebook.npz``: ``prototypes``, ``norm.{i}.mean`` and ``norm.{i}.var``."""
        out = {"prototypes": self.prototypes.astype(np.float32)}
        for i, (mean, var) in enumerate(self.stats):
            out[f"norm.{i}.mean"], out[f"norm.{i}.var"] = np.asarray(mean, np.float64), np.asarray(var, np.float64)
        return out


def default_class_names(k: int) -> list[str]:
    """``["class 1", ..., "class k"]``."""
    return [f"class {i}" for i in range(1, k + 1)]


def read_class_names(path: str | Path) -> list[str]:
    """Class names from a file: a JSON list, or one name per line (blank lines and ``#`` lines skipped).

    A CSV with a header whose columns include ``name`` (such as ``classes.csv``) is read by that
    column, rows in file order.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ArtifactError(f"class names {path}: cannot read ({exc})") from exc
    if text.lstrip().startswith("["):
        names = json.loads(text)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ArtifactError(f"class names {path}: a JSON file must hold a list of strings")
        return [n.strip() for n in names]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    header = [c.strip().lower() for c in lines[0].split(",")] if lines else []
    if "name" in header and len(header) > 1:
        col = header.index("name")
        return [ln.split(",")[col].strip() for ln in lines[1:]]
    return lines


def resolve_class_names(names: list[str] | tuple[str, ...] | None, k: int) -> list[str]:
    """``names`` checked against ``k`` (default names when empty); ConfigError on a wrong count or an
    empty name. A name may repeat: codebook ids named alike are one class (:func:`class_groups`)."""
    if not names:
        return default_class_names(k)
    names = [str(n).strip() for n in names]
    if len(names) != k:
        raise ConfigError(f"{len(names)} class names given for k={k} classes; give exactly one name per class")
    if not all(names):
        raise ConfigError(f"class names must not be empty, got {names}")
    return names


def class_groups(names: list[str] | tuple[str, ...], mergeable: bool = True) -> tuple[list[str], np.ndarray | None]:
    """The legend of ids named ``names`` (one per id): ids named alike form one class.

    Returns the distinct names in order of first appearance (output classes ``1..n``) and, when a
    name repeats, ``groups int64 (k,)``: the output class index of every id (``None`` when every
    name is distinct, so nothing needs merging). The usual remote-sensing workflow: fit many more
    codebook prototypes than land covers (``--codebook-k 30``), look at them, and name each id; ids
    named alike are merged (:func:`segcore.regions.merge_classes`: a class scores its best id).
    ``mergeable=False`` (ids fitted per raster, which mean nothing from one raster to the next):
    a repeated name is a ConfigError.
    """
    legend = list(dict.fromkeys(names))
    if len(legend) == len(names):
        return legend, None
    if not mergeable:
        raise ConfigError(f"class names repeat ({', '.join(names)}): only codebook ids can be merged by name; "
                          "ids fitted per raster mean nothing from one raster to the next")
    index = {name: i for i, name in enumerate(legend)}
    return legend, np.asarray([index[n] for n in names], np.int64)


def prototype_names(class_names: list[str], merge: dict) -> list[str]:
    """One name per prototype of a grouped codebook (``record["merge"]``, ``--codebook-merge-from``):
    each prototype takes the name of the class it was grouped into, so predict merges them."""
    return [class_names[g] for g in merge["groups"]]


# -- k-means ----------------------------------------------------------------------------------------
def kmeanspp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on unit rows ``x (N, E)`` with distance ``1 - cos``: ``(k,)`` row indexes."""
    n = x.shape[0]
    idx = [int(rng.integers(n))]
    dist = np.maximum(1.0 - x @ x[idx[0]], 0.0).astype(np.float64)
    for _ in range(k - 1):
        w = dist**2
        total = w.sum()
        nxt = int(rng.choice(n, p=w / total)) if total > 0 else int(rng.integers(n))
        idx.append(nxt)
        dist = np.minimum(dist, np.maximum(1.0 - x @ x[nxt], 0.0))
    return np.asarray(idx, np.int64)


def spherical_kmeans(x: np.ndarray, init: np.ndarray, iters: int) -> tuple[np.ndarray, float, int]:
    """Lloyd iterations on unit rows ``x (N, E)`` from prototypes ``init (k, E)``.

    Returns ``(prototypes (k, E) float32, mean cosine of each row to its prototype, iterations run)``.
    An emptied cluster is re-seeded with the row farthest from its prototype.
    """
    protos = init.astype(np.float32).copy()
    labels = np.full(x.shape[0], -1, np.int64)
    runs = 0
    for _ in range(iters):
        sims = x @ protos.T  # (N, k)
        new = sims.argmax(1)
        if np.array_equal(new, labels):
            break
        labels, runs = new, runs + 1
        for j in range(protos.shape[0]):
            members = x[labels == j]
            if len(members) == 0:
                far = int(np.argmin(sims[np.arange(len(x)), labels]))
                labels[far] = j
                members = x[far : far + 1]
            s = members.sum(0)
            protos[j] = s / max(float(np.linalg.norm(s)), 1e-12)
    score = float((x @ protos.T).max(1).mean())
    return protos, score, runs


def fit_prototypes(x: np.ndarray, k: int, seed: int, restarts: int = 4, iters: int = 50
                   ) -> tuple[np.ndarray, dict[str, Any]]:
    """Spherical k-means with k-means++ seeding on ``x (N, E)``; best of ``restarts`` by mean cosine."""
    if x.shape[0] < k:
        raise ValueError(f"{x.shape[0]} sample embeddings, fewer than k={k}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    best: tuple[np.ndarray, float, int] | None = None
    for _ in range(max(1, restarts)):
        fit = spherical_kmeans(x, x[kmeanspp(x, k, rng)], iters)
        if best is None or fit[1] > best[1]:
            best = fit
    protos, score, its = best
    # Stable order: largest cluster first, so ids do not depend on which seeding won.
    sizes = np.bincount((x @ protos.T).argmax(1), minlength=k)
    order = np.argsort(-sizes, kind="stable")
    record = {"init": "k-means++", "seed": int(seed), "restarts": int(max(1, restarts)), "max_iters": int(iters),
              "iters": int(its), "mean_cosine": round(score, 6),
              "cluster_shares": [round(float(s), 6) for s in sizes[order] / sizes.sum()]}
    return np.ascontiguousarray(protos[order]), record


def fit_codebook(model: NumpyModel, windows: list[tuple[np.ndarray, np.ndarray]], req: CodebookRequest,
                 source: str = "") -> Codebook:
    """Fit a codebook on sample ``windows`` (``(rgb uint8 (H, W, 3), valid bool (H, W))`` each).

    Norm statistics are measured jointly over all windows; the valid embedding cells of all windows
    (at most ``req.samples``, drawn with ``req.seed``) fit ``req.k`` prototypes, or ``req.merge_from``
    prototypes grouped into ``req.k`` classes by their adjacency in the same windows
    (:func:`adjacency_groups`, recorded under ``record["merge"]``).
    """
    count = req.merge_from or req.k
    if not 1 <= count <= 255:
        raise ValueError(f"codebook k={count} must be within 1..255 (one uint8 label per class)")
    if not windows:
        raise ValueError("no sample windows to fit a codebook on")
    embeds, stats = model.embed_joint([rgb for rgb, _ in windows])
    masks = [valid[::STRIDE, ::STRIDE][: z.shape[1], : z.shape[2]]
             for z, (_, valid) in zip(embeds, windows, strict=True)]  # valid embedding cells
    cells = [z.reshape(z.shape[0], -1).T[v.reshape(-1)] for z, v in zip(embeds, masks, strict=True)]
    sample = np.concatenate(cells).astype(np.float32)
    total = len(sample)
    rng = np.random.default_rng(req.seed)
    if total > req.samples:
        sample = sample[np.sort(rng.choice(total, req.samples, replace=False))]
    protos, record = fit_prototypes(sample, count, req.seed, req.restarts, req.iters)
    record.update({"k": count, "windows": len(windows), "window_side": req.side, "valid_cells": int(total),
                   "samples": len(sample), "source": source, "file": FILE,
                   "norm_layers": len(stats)})
    log.info("codebook: k=%d from %d windows (%d of %d cells), mean cosine %.3f",
             count, len(windows), len(sample), total, record["mean_cosine"])
    if req.merge_from:
        # The joint embeddings are those of the frozen statistics: the ids predict will give.
        ids = [model.probabilities(z, protos).argmax(0) for z in embeds]
        group = adjacency_groups(adjacency_counts(ids, masks, count), req.k)
        record["merge"] = {"criterion": "adjacency", "classes": req.k, "groups": [int(g) for g in group]}
        log.info("codebook: %d prototypes grouped into %d classes by adjacency: %s", count, req.k,
                 [int((group == c).sum()) for c in range(req.k)])
    return Codebook(protos, stats, record)


def adjacency_counts(ids: list[np.ndarray], valid: list[np.ndarray], k: int, distance: int = 1) -> np.ndarray:
    """``(k, k)`` symmetric counts of cell pairs ``distance`` cells apart (right and below; 1: 4-neighbours)
    whose ids are ``(i, j)``, over maps ``ids`` of ids ``0..k-1`` with their ``valid`` masks (pairs with
    an invalid cell are skipped)."""
    counts, d = np.zeros((k, k)), distance
    for lab, ok in zip(ids, valid, strict=True):
        for a, b, va, vb in ((lab[:, :-d], lab[:, d:], ok[:, :-d], ok[:, d:]),
                             (lab[:-d], lab[d:], ok[:-d], ok[d:])):
            both = va & vb
            np.add.at(counts, (a[both], b[both]), 1)
    return counts + counts.T


def agglomerate(n: int, k: int, similarity: Callable[[list[int], list[int]], float]) -> list[list[int]]:
    """Greedy agglomeration of ``n`` singletons into ``k`` groups: the most ``similarity`` pair joins, each step."""
    groups = [[i] for i in range(n)]
    while len(groups) > k:
        m = len(groups)
        _, i, j = max((similarity(groups[i], groups[j]), i, j) for i in range(m) for j in range(i + 1, m))
        groups[i] += groups.pop(j)
    return groups


def adjacency_groups(counts: np.ndarray, n: int) -> np.ndarray:
    """Group ``k`` prototypes into ``n`` classes: ``(k,)`` class of each prototype, ``0..n-1``, largest first.

    Greedy modularity on the adjacency ``counts`` (:func:`adjacency_counts`): starting from one
    group per prototype, the pair of groups whose cells neighbour each other most beyond what their
    sizes predict (``A_ij - d_i d_j`` with ``A`` the counts over their total and ``d`` its row sums)
    joins, until ``n`` groups are left. On land-cover imagery at a working grid of metres, cells of
    different prototypes that touch are mostly one land cover (a field's rows and margins), so this
    merges the several prototypes a varied class takes; where cells are smaller than the objects
    (drone chips read at decimetres) touching prototypes are mostly object boundaries and this
    merge loses (docs/benchmarks.md, "Naming prototypes without a person").
    """
    k = counts.shape[0]
    if not 1 <= n <= k:
        raise ValueError(f"cannot group {k} prototypes into {n} classes")
    a = counts / max(float(counts.sum()), 1.0)
    deg = a.sum(1)
    groups = agglomerate(k, n, lambda gi, gj: a[np.ix_(gi, gj)].sum() - deg[gi].sum() * deg[gj].sum())
    groups.sort(key=lambda g: (-deg[g].sum(), min(g)))
    out = np.zeros(k, np.int64)
    for c, members in enumerate(groups):
        out[members] = c
    return out


def load_codebook(export_dir: str | Path, meta: dict[str, Any]) -> Codebook | None:
    """The codebook stored in an export, or ``None`` when it has none. ArtifactError when damaged."""
    record = meta.get("codebook")
    if not record:
        return None
    path = Path(export_dir) / record.get("file", FILE)
    try:
        with np.load(path, allow_pickle=False) as npz:
            protos = npz["prototypes"].astype(np.float32)
            stats = [(npz[f"norm.{i}.mean"], npz[f"norm.{i}.var"]) for i in range(int(record["norm_layers"]))]
    except (OSError, KeyError, ValueError) as exc:
        raise ArtifactError(f"export {export_dir}: {path.name} is missing or damaged ({exc}); re-run "
                            "`segcore export` to fit the codebook again") from exc
    if protos.shape != (int(record["k"]), int(meta["embed_dim"])):
        raise ArtifactError(f"export {export_dir}: codebook prototypes {list(protos.shape)} do not match "
                            f"k={record['k']}, embed_dim={meta['embed_dim']}")
    return Codebook(protos, stats, dict(record))


def predict_codebook(model: NumpyModel, codebook: Codebook, image: np.ndarray) -> np.ndarray:
    """``image (H, W, 3)`` -> codebook ids ``int64 (H, W)`` in ``0..k-1`` (one in-memory image)."""
    h, w = np.asarray(image).shape[:2]
    return model.assign(model.embed(image, codebook.stats), codebook.prototypes, (h, w))[1]


def window_origins(extent: int, side: int, rng: np.random.Generator) -> int:
    """A random window origin in ``0..extent-side``, a multiple of 4."""
    return int(rng.integers(0, max(0, extent - side) // STRIDE + 1)) * STRIDE
