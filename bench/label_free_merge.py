"""Label-free merges of a large codebook: K' prototypes grouped into K classes with no labels.

Thirty prototypes named by a person lift the legend-level score well above a six-prototype codebook
(``bench/quality_real.py --named-codebook``, docs/benchmarks.md "Many prototypes, named"). This bench
asks whether the naming can be done without a person: it groups the K' prototypes of each trained
model into K classes by a label-free criterion, writes the groups as repeated class names (the
product's own merge: ids named alike become one class, ``segcore.codebook.class_groups``), predicts
every image with the product defaults and scores it as ``bench/quality_real.py`` does. The K-prototype
codebook of the same model is scored in the same run as the reference row.

Criteria, all measured on the codebook's sample windows (the training shards, ``--windows`` of
256 px with the model's seed), each a greedy agglomeration from K' singletons to K groups:

* ``adjacency``: modularity of the graph whose edge weights count how often two prototypes win
  cells ``--distance`` cells apart (right and below); prototypes that sit side by side in the
  scenes join (a field's rows and its margins, a roof and its shadow);
* ``confusion``: modularity of ``sum over cells of p p^T`` (the soft assignments): prototypes that
  share probability in the same cells join, i.e. look-alikes for the model;
* ``cosine``: average linkage on the prototypes' cosine similarity;
* ``ward``: Ward linkage on the unit prototypes weighted by their share of the cells (k-means'
  objective, started from K' clusters).

    python bench/label_free_merge.py ../shared/data/deepglobe-sample --source-gsd 0.5 --seeds 0,1,2 \
        predict.region_compactness=0.4 predict.region_m=300
    python bench/label_free_merge.py ../shared/data/dronedeploy-sample --source-gsd 0.1 --seeds 0,1,2 \
        --distance 1,17 predict.region_compactness=0.4 predict.region_m=300

The trained models are those of ``bench/quality_real.py`` (``--runs``, a pattern with ``{seed}``:
its ``run/checkpoints/last.pt`` and ``processed/bench`` shards are used). The two overrides restore
the vote defaults for models exported when they differed (see docs/benchmarks.md). Results append
to ``--out``/scores.jsonl; the printed table has the mean of the seeds and each seed's
dataset-matched mIoU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_real import num_classes, run_name, score

from segcore.codebook import CodebookRequest, adjacency_counts, adjacency_groups, agglomerate, load_codebook
from segcore.codebook_sources import shard_windows
from segcore.config import load_config
from segcore.export import export_checkpoint
from segcore.predict import export_config
from segcore.runtime import STRIDE, load_export

CRITERIA = ("adjacency", "confusion", "cosine", "ward")


class EmbedCache:
    """A loaded export whose ``embed`` remembers its results (every criterion predicts the same images)."""

    def __init__(self, model):
        self._model, self._cache = model, {}

    def __getattr__(self, name):
        return getattr(self._model, name)

    def embed(self, rgb: np.ndarray, stats=None) -> np.ndarray:
        key = (hashlib.blake2b(np.ascontiguousarray(rgb).tobytes(), digest_size=16).hexdigest(), rgb.shape,
               id(stats))
        if key not in self._cache:
            self._cache[key] = self._model.embed(rgb, stats)
        return self._cache[key]


def window_counts(model, codebook, windows, distances: list[int]) -> dict[str, np.ndarray]:
    """Per prototype pair: hard co-occurrence at each distance (symmetric), soft confusion; cell shares."""
    kp = codebook.k
    ids, valid = [], []
    confusion, mass = np.zeros((kp, kp)), np.zeros(kp)
    for rgb, ok in windows:
        probs = model.probabilities(model.embed(rgb, codebook.stats), codebook.prototypes)
        ids.append(probs.argmax(0))
        valid.append(ok[::STRIDE, ::STRIDE][: probs.shape[1], : probs.shape[2]])
        mass += np.bincount(ids[-1][valid[-1]], minlength=kp)
        cells = probs[:, valid[-1]]
        confusion += cells @ cells.T
    out = {f"adjacency@{d}": adjacency_counts(ids, valid, kp, d) for d in distances}
    out.update(confusion=confusion, mass=mass / max(mass.sum(), 1.0))
    return out


def modularity(weights: np.ndarray, k: int) -> list[list[int]]:
    """Greedy modularity of a symmetric weight graph, the product's grouping (:func:`adjacency_groups`)."""
    group = adjacency_groups(weights, k)
    return [np.flatnonzero(group == c).tolist() for c in range(k)]


def cosine(protos: np.ndarray, k: int) -> list[list[int]]:
    p = protos / np.linalg.norm(protos, axis=1, keepdims=True)
    sim = p @ p.T
    return agglomerate(len(p), k, lambda gi, gj: sim[np.ix_(gi, gj)].mean())


def ward(protos: np.ndarray, mass: np.ndarray, k: int) -> list[list[int]]:
    p = protos / np.linalg.norm(protos, axis=1, keepdims=True)
    w = np.maximum(mass, 1e-9)

    def similarity(gi: list[int], gj: list[int]) -> float:
        wi, wj = w[gi].sum(), w[gj].sum()
        ci, cj = (p[gi] * w[gi, None]).sum(0) / wi, (p[gj] * w[gj, None]).sum(0) / wj
        return -(wi * wj / (wi + wj)) * float(((ci - cj) ** 2).sum())

    return agglomerate(len(p), k, similarity)


def names_of(groups: list[list[int]], kp: int) -> list[str]:
    """Class names of ids ``1..kp`` that make ``predict_raster`` merge each group into one class."""
    names = [""] * kp
    for g, members in enumerate(groups, start=1):
        for i in members:
            names[i] = f"group {g}"
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder with manifest.csv and classes.csv")
    parser.add_argument("--source-gsd", type=float, required=True, help="metres per pixel of the images")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds of the trained models")
    parser.add_argument("--runs", default=None,
                        help="pattern of the quality_real run folders (default bench/out/quality_real/<name>-s{seed})")
    parser.add_argument("--prototypes", type=int, default=30, help="K': prototypes of the large codebook")
    parser.add_argument("--k", type=int, default=6, help="classes after the merge (the protocol's K)")
    parser.add_argument("--windows", type=int, default=48, help="sample windows the criteria are measured on")
    parser.add_argument("--distance", default="1", help="comma-separated cell distances of the adjacency criterion")
    parser.add_argument("--criteria", default=",".join(CRITERIA), help=f"comma-separated, of {', '.join(CRITERIA)}")
    parser.add_argument("--out", type=Path, default=None, help="default bench/out/label_free_merge/<name>")
    parser.add_argument("overrides", nargs="*", help="section.key=value changes to the predict defaults")
    args = parser.parse_intermixed_args()
    if not (args.data / "manifest.csv").is_file():
        raise SystemExit(f"skipped: {args.data / 'manifest.csv'} not found (point DATA at a shared/data set)")
    runs = args.runs or f"bench/out/quality_real/{args.data.name}-s{{seed}}"
    out = args.out or Path("bench/out/label_free_merge") / args.data.name
    out.mkdir(parents=True, exist_ok=True)
    criteria = args.criteria.split(",")
    distances = [int(d) for d in args.distance.split(",")]
    kp, k = args.prototypes, args.k
    if num_classes(args.data) != k:
        print(f"note: {args.data.name} has {num_classes(args.data)} classes, merging into --k {k}")
    rows: dict[str, list[dict]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        run = Path(runs.format(seed=seed))
        checkpoint, shards = run / "run" / "checkpoints" / "last.pt", run / "processed" / "bench"
        if not checkpoint.is_file() or not (shards / "manifest.json").is_file():
            raise SystemExit(f"{run}: no trained model and shards; run bench/quality_real.py --seed {seed} first")
        cfg = None
        exports = [("ref", CodebookRequest(k=k, seed=seed, source=str(shards))),
                   ("large", CodebookRequest(k=kp, seed=seed, source=str(shards)))]
        if "adjacency" in criteria:  # the product's own merge (export --codebook-merge-from): adjacency, 1 cell
            exports.append(("product", CodebookRequest(k=k, seed=seed, source=str(shards), merge_from=kp)))
        for kind, request in exports:
            export = export_checkpoint(checkpoint, out / f"s{seed}-{kind}", codebook=request)
            model = EmbedCache(load_export(export))
            codebook = load_codebook(export, model.meta)
            if cfg is None:
                cfg = load_config(flags={"data.source_gsd": args.source_gsd}, overrides=args.overrides,
                                  base=export_config(model.meta))
            key = run_name("codebook", cfg.predict.region_m, cfg.predict.prior_rounds)
            if kind == "ref":
                plans = {f"{k} prototypes (reference)": None}
            elif kind == "product":
                plans = {f"segcore export --codebook-k {k} --codebook-merge-from {kp}": model.meta["codebook"]["merge"]}
            else:
                windows, _ = shard_windows(shards, "train", args.windows, 256, seed)
                counts = window_counts(model, codebook, windows, distances)
                plans = {}
                for name in criteria:
                    if name == "adjacency":
                        plans.update({f"adjacency, {d} cell{'s' * (d > 1)}": modularity(counts[f"adjacency@{d}"], k)
                                      for d in distances})
                    elif name == "confusion":
                        plans[name] = modularity(counts["confusion"], k)
                    elif name == "cosine":
                        plans[name] = cosine(codebook.prototypes, k)
                    elif name == "ward":
                        plans[name] = ward(codebook.prototypes, counts["mass"], k)
                    else:
                        raise SystemExit(f"unknown criterion {name!r} (one of {', '.join(CRITERIA)})")
            for label, groups in plans.items():
                pred = out / f"pred-s{seed}-{re.sub(r'[^a-z0-9]+', '-', label.lower()).strip('-')}"
                pred.mkdir(exist_ok=True)
                names = None if groups is None else (
                    model.meta["class_names"] if kind == "product" else names_of(groups, kp))
                r = score(args.data, pred, k, seed, model, cfg, [cfg.predict.region_m], codebook, raster_rows=False,
                          baselines=False, priors=(cfg.predict.prior_rounds,), class_names=names)[key]
                rec = {"data": args.data.name, "seed": seed, "prototypes": codebook.k, "plan": label,
                       "groups": groups, "overrides": args.overrides, **r}
                with (out / "scores.jsonl").open("a") as f:
                    f.write(json.dumps(rec, default=int) + "\n")
                rows.setdefault(label, []).append(rec)
                print(f"seed {seed}, {label}: {r['miou']:.3f} / {r['pixel_acc']:.3f} / {r['dataset_miou']:.3f}",
                      flush=True)
    print(f"\n{args.data.name}: {kp} prototypes merged into {k} classes without labels, product defaults "
          f"(overrides {args.overrides or 'none'}); mean of seeds {args.seeds}")
    print("| merge | mIoU | pixel accuracy | mIoU, one matching for the dataset | per seed (dataset) |")
    print("|---|---|---|---|---|")
    for label, recs in rows.items():
        mean = [np.mean([r[m] for r in recs]) for m in ("miou", "pixel_acc", "dataset_miou")]
        each = " ".join(f"{r['dataset_miou']:.3f}" for r in recs)
        print(f"| {label} | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} | {each} |")


if __name__ == "__main__":
    main()
