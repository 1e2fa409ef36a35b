"""Quality on real imagery, measured the way a user gets it.

The user's path, with the product's defaults: build shards from the images alone (labels are never
given to the builder or the trainer), train, export, then ``segcore predict`` on every image at its
native resolution. Only the scorer reads the labels, with the protocol of ``shared/data/README.md``:
every s-th pixel (s = ceil(longer side / 512)), K segments per image, segments matched one-to-one to
classes by the Hungarian method, labels <= 0 ignored, confusions summed over all images; mIoU over
the classes present, and pixel accuracy. RGB k-means and SLIC + k-means on mean colours are scored
in the same run on the same pixels, and so is k-means on the colour/texture descriptors the student
distils (its teacher). The export carries a K-class dataset codebook (fitted on the training shards,
as ``segcore export`` does by default) and prediction uses it (``predict.classes=auto``); rows with
prototypes fitted per raster (``--classes raster``) are scored too, for the ablation.

Two reference points keep the protocol honest. One label per image (a constant) is scored like a
method: where scenes are mostly one land cover, per-image matching rewards predicting fewer
segments, and this row says how much. Codebook rows also report the mIoU with *one* matching of
ids to classes for the whole dataset, which only rises when an id means the same land cover in
every image (what a user's legend needs). ``--prior-rounds 1,0`` scores the class prior
(``predict.prior_rounds``) with one EM round and off.

    python bench/quality_real.py ../shared/data/deepglobe-sample --source-gsd 0.5 --seed 0
    python bench/quality_real.py ../shared/data/dronedeploy-sample --source-gsd 0.1 --seed 0
    python bench/quality_real.py DIR --source-gsd 0.5 --checkpoint bench/out/x/run/checkpoints/last.pt
    python bench/quality_real.py DIR --source-gsd 0.5 --seed 1 --codebook-seeds 0,1,2   # 3 codebook draws
    python bench/quality_real.py DIR --source-gsd 0.5 --checkpoint CKPT --prior-rounds 1,0   # prior ablation
    python bench/quality_real.py DIR --source-gsd 0.5 --checkpoint CKPT --named-codebook 30   # analyst naming

``DIR`` holds ``manifest.csv`` (``image,label`` columns, paths relative to it) and ``classes.csv``.
``--source-gsd`` is the one per-dataset input: these rasters carry no CRS, so their metres per pixel
must be given (as a user would with ``data.source_gsd``). Extra ``section.key=value`` arguments
change the defaults (for ablations; the table says which were used).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio

from segcore.codebook import CodebookRequest, load_codebook, read_class_names
from segcore.config import load_config
from segcore.data.shards import build_shards
from segcore.export import export_checkpoint
from segcore.metrics import kmeans_rgb_labels, matched_confusion, scores
from segcore.predict import export_config, predict_raster
from segcore.runtime import load_export

MAX_SIDE = 512


def read_pairs(root: Path) -> list[tuple[Path, Path]]:
    table = pd.read_csv(root / "manifest.csv")
    return [(root / row["image"], root / row["label"]) for row in table.to_dict("records")]


def num_classes(root: Path) -> int:
    classes = pd.read_csv(root / "classes.csv")
    return int(classes.iloc[:, 0].max())


def strided(path: Path, s: int, band: int | list[int]) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(band)[..., ::s, ::s]


def slic_kmeans(image: np.ndarray, k: int, seed: int) -> np.ndarray:
    from kmeans_baseline import slic_kmeans_labels  # bench/ is on sys.path when run as a script

    return slic_kmeans_labels(image, k, seed, 24, 10.0)


def descriptor_kmeans(image: Path, cfg, k: int, seed: int, s: int) -> np.ndarray:
    """k-means on the colour/texture descriptors the student distils, on the working grid, read back
    at every ``s``-th pixel of the file (the student's own teacher, as a baseline)."""
    from quality import DescriptorKMeans  # bench/ is on sys.path when run as a script
    from rasterio.windows import Window

    from segcore.data.raster import inspect_raster, open_raster, read_rgb

    info = inspect_raster(image, cfg.data)
    with open_raster(image) as ds:
        rgb, valid = read_rgb(ds, info, Window(0, 0, info.width, info.height), cfg.data)
    labels = DescriptorKMeans(seed).segment(rgb, k, valid)  # (h, w) on the working grid
    rows = np.minimum(((np.arange(0, info.native_height, s) + 0.5) / info.factor_y).astype(int), info.height - 1)
    cols = np.minimum(((np.arange(0, info.native_width, s) + 0.5) / info.factor_x).astype(int), info.width - 1)
    return labels[rows][:, cols]


def train(root: Path, out: Path, seed: int, source_gsd: float, overrides: list[str]) -> tuple[Path, float, float]:
    """Shards from ``root/images`` (no labels), then training; returns ``(checkpoint, build s, train s)``."""
    from segcore.train import fit

    images = sorted({str(p.parent) for p, _ in read_pairs(root)})
    cfg = load_config(flags={"data.raster_paths": tuple(images), "data.source": "shards",
                             "data.processed_root": str(out / "processed"), "data.dataset": "bench",
                             "data.source_gsd": source_gsd, "train.seed": seed, "aug.seed": seed},
                      overrides=overrides)
    if (out / "processed").exists():
        shutil.rmtree(out / "processed")  # bench/out is this script's own scratch space
    t0 = time.perf_counter()
    build_shards(cfg, progress=False)
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = fit(cfg, out / "run", progress=True)
    return Path(result.checkpoint), built, time.perf_counter() - t0


def run_name(mode: str, region: float, rounds: int) -> str:
    """Key of one predict setting in the score dicts, e.g. ``codebook@300/prior1``."""
    return f"{mode}@{region:g}/prior{rounds}"


def score(root: Path, pred_dir: Path, k: int, seed: int, model, cfg, regions: list[float], codebook,
          raster_rows: bool = True, baselines: bool = True, priors: tuple[int, ...] = (1,),
          class_names: list[str] | None = None) -> dict[str, dict]:
    """Predict with ``model`` once per mode (``codebook``, and ``raster`` prototypes per image), region
    size in ``regions`` (metres) and class-prior rounds in ``priors`` (``cfg``: the resolved Config, its data
    and predict sections are used) and score every image; RGB, SLIC and descriptor k-means and one
    label per image on the same pixels unless ``baselines`` is off. Codebook rows also get
    ``dataset_miou``: one matching of ids to classes for the whole dataset instead of one per image
    (what a legend that means the same in every raster is worth). ``class_names``: names of the
    codebook ids (codebook rows; ids named alike are merged by ``predict_raster``)."""
    c = num_classes(root)
    raster_regions = sorted({regions[0], regions[-1]})  # the per-raster ablation: no vote and the largest
    runs = [(run_name("codebook", r, p), "codebook", r, p) for p in priors for r in regions]
    runs += [(run_name("raster", r, p), "raster", r, p) for p in priors for r in raster_regions if raster_rows]
    names = [name for name, _, _, _ in runs]
    others = ("rgb", "slic", "desc", "const") if baselines else ()
    conf = {name: np.zeros((c + 1, c + 1), np.int64) for name in (*names, *others)}
    timing = {name: [0.0, 0.0] for name in names}  # seconds, megapixels
    pooled = {name: ([], []) for name, mode, _, _ in runs if mode == "codebook"}  # predictions, targets
    for image, label in read_pairs(root):
        with rasterio.open(label) as ds:
            s = max(1, math.ceil(max(ds.width, ds.height) / MAX_SIDE))
        target = strided(label, s, 1).astype(np.int64)
        for name, mode, region, prior in runs:
            out = pred_dir / f"{image.stem}-{mode}-r{region:g}-p{prior}.tif"
            t0 = time.perf_counter()
            res = predict_raster(image, out, model, None if mode == "codebook" else k, data_cfg=cfg.data,
                                 progress=False, region_m=region, region_compactness=cfg.predict.region_compactness,
                                 prior_rounds=prior, codebook=codebook if mode == "codebook" else None,
                                 class_names=class_names if mode == "codebook" else None)
            timing[name][0] += time.perf_counter() - t0
            timing[name][1] += res.width * res.height / 1e6
            pred = strided(out, s, 1).astype(np.int64)
            conf[name] += matched_confusion(pred, target, c)
            if name in pooled:
                pooled[name][0].append(pred.ravel())
                pooled[name][1].append(target.ravel())
        if not baselines:
            continue
        conf["const"] += matched_confusion(np.zeros_like(target), target, c)
        rgb = np.ascontiguousarray(strided(image, s, [1, 2, 3]).transpose(1, 2, 0))
        conf["rgb"] += matched_confusion(kmeans_rgb_labels(rgb, k, seed=seed), target, c)
        conf["slic"] += matched_confusion(slic_kmeans(rgb, k, seed), target, c)
        conf["desc"] += matched_confusion(descriptor_kmeans(image, cfg, k, seed, s), target, c)
    result = {name: scores(m) for name, m in conf.items()}
    for name, (seconds, mp) in timing.items():
        result[name]["mp_per_s"] = mp / max(seconds, 1e-9)
    for name, (preds, targets) in pooled.items():
        result[name]["dataset_miou"] = scores(matched_confusion(np.concatenate(preds), np.concatenate(targets),
                                                                c))["miou"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder with manifest.csv and classes.csv")
    parser.add_argument("--source-gsd", type=float, required=True, help="metres per pixel of the images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=6, help="segments per image (the protocol's K)")
    parser.add_argument("--out", type=Path, default=None, help="default bench/out/quality_real/<name>-s<seed>")
    parser.add_argument("--checkpoint", type=Path, help="skip building and training; score this checkpoint")
    parser.add_argument("--no-raster-rows", action="store_true", help="skip the per-raster-prototype rows")
    parser.add_argument("--region-m", default=None,
                        help="comma-separated region vote sizes in metres to score (default: predict.region_m)")
    parser.add_argument("--prior-rounds", default=None,
                        help="comma-separated class-prior EM rounds to score, 0: off (default: predict.prior_rounds)")
    parser.add_argument("--codebook-seeds", default=None,
                        help="comma-separated extra codebook seeds: the same model is exported and scored once "
                             "per seed (codebook rows only) and the mean over all draws is printed")
    parser.add_argument("--named-codebook", type=int, default=0, metavar="K",
                        help="also score the analyst's workflow: a K-prototype codebook whose ids are named once "
                             "for the dataset (after their majority class: the labels stand in for the analyst), "
                             "ids named alike merged")
    parser.add_argument("overrides", nargs="*", help="section.key=value changes to the defaults")
    args = parser.parse_intermixed_args()
    if not (args.data / "manifest.csv").is_file():
        raise SystemExit(f"skipped: {args.data / 'manifest.csv'} not found (point DIR at a shared/data set)")
    out = args.out or Path("bench/out/quality_real") / f"{args.data.name}-s{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    built = trained = float("nan")
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint, built, trained = train(args.data, out, args.seed, args.source_gsd, args.overrides)
    shards = out / "processed" / "bench"
    source = str(shards) if (shards / "manifest.json").is_file() else str(args.data / "images")
    export = export_checkpoint(checkpoint, out / "export", codebook=CodebookRequest(k=args.k, seed=args.seed,
                                                                                     source=source))
    model = load_export(export)
    cfg = load_config(flags={"data.source_gsd": args.source_gsd}, overrides=args.overrides,
                      base=export_config(model.meta))
    pred_dir = out / "pred"
    pred_dir.mkdir(exist_ok=True)
    regions = [float(r) for r in args.region_m.split(",")] if args.region_m else [cfg.predict.region_m]
    priors = tuple(int(x) for x in args.prior_rounds.split(",")) if args.prior_rounds else (cfg.predict.prior_rounds,)
    res = score(args.data, pred_dir, args.k, args.seed, model, cfg, regions, load_codebook(export, model.meta),
                not args.no_raster_rows, priors=priors)
    print(f"\n{args.data.name}: {len(read_pairs(args.data))} images, seed {args.seed}, K = {args.k}, "
          f"data.gsd={cfg.data.gsd} (source {args.source_gsd} m), overrides {args.overrides or 'none'}")
    print(f"shards {built:.0f} s, training {trained / 60:.1f} min (train.threads={cfg.train.threads}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    print("| method | mIoU | pixel accuracy | mIoU, one matching for the dataset | predict MP/s of input |")
    print("|---|---|---|---|---|")
    for name, title in (("const", "one label per image (a constant)"), ("rgb", "k-means on RGB pixels"),
                        ("slic", "SLIC + k-means on mean colours"),
                        ("desc", "k-means on the distilled descriptors (working grid)")):
        print(f"| {title} | {res[name]['miou']:.3f} | {res[name]['pixel_acc']:.3f} | | |")
    for mode in ("codebook", "raster"):
        for prior in priors:
            for region in regions:
                name = run_name(mode, region, prior)
                if name not in res:
                    continue
                r = res[name]
                vote = f"region vote {region:g} m" if region else "no region vote"
                pooled = f"{r['dataset_miou']:.3f}" if "dataset_miou" in r else ""
                print(f"| segcore, {mode} classes, {vote}, prior {prior} rounds | {r['miou']:.3f} | "
                      f"{r['pixel_acc']:.3f} | {pooled} | {r['mp_per_s']:.2f} |")
    if args.named_codebook:
        res.update(named_codebook(args, checkpoint, source, out, cfg))
    draws = codebook_draws(args, checkpoint, source, out, cfg, regions, priors, res)
    (out / "quality_real.json").write_text(json.dumps(
        {"data": str(args.data), "seed": args.seed, "k": args.k, "overrides": args.overrides,
         "gsd": cfg.data.gsd, "source_gsd": args.source_gsd, "shards_seconds": built, "train_seconds": trained,
         "scores": res, "codebook_draws": draws}, indent=2, default=float))


def named_codebook(args, checkpoint: Path, source: str, out: Path, cfg) -> dict[str, dict]:
    """The analyst's workflow: a codebook of ``--named-codebook`` prototypes, each id named once for the
    whole dataset, ids named alike merged into one class by ``predict_raster``.

    The labels stand in for the analyst: each id is named after the class most of its pixels have
    over the dataset (one decision per id, not per image); an id that never wins a pixel takes the
    name of the most similar named prototype. Both passes use the product defaults (vote, prior).
    Returns the scores under ``named@<k>`` with the names used.
    """
    kp, c = args.named_codebook, num_classes(args.data)
    labels_csv = read_class_names(args.data / "classes.csv")  # row i: class i (row 0: ignore)
    export = export_checkpoint(checkpoint, out / f"export-k{kp}",
                               codebook=CodebookRequest(k=kp, seed=args.seed, source=source))
    model = load_export(export)
    codebook = load_codebook(export, model.meta)
    pred_dir = out / f"pred-k{kp}"
    pred_dir.mkdir(exist_ok=True)
    counts = np.zeros((kp + 1, c + 1), np.int64)  # codebook id x class, pooled over the dataset
    p = cfg.predict
    for image, label in read_pairs(args.data):
        with rasterio.open(label) as ds:
            s = max(1, math.ceil(max(ds.width, ds.height) / MAX_SIDE))
        dst = pred_dir / f"{image.stem}-ids.tif"
        predict_raster(image, dst, model, data_cfg=cfg.data, progress=False, region_m=p.region_m,
                       region_compactness=p.region_compactness, prior_rounds=p.prior_rounds, codebook=codebook)
        target, pred = strided(label, s, 1).astype(np.int64), strided(dst, s, 1).astype(np.int64)
        keep = target > 0
        np.add.at(counts, (pred[keep], target[keep]), 1)
    won = counts[1:, 1:].sum(1) > 0
    best = counts[1:, 1:].argmax(1) + 1
    protos = codebook.prototypes
    for i in np.flatnonzero(~won):
        sims = np.where(won, protos @ protos[i], -np.inf)
        best[i] = best[int(np.argmax(sims))] if won.any() else 1
    names = [labels_csv[j] for j in best]
    scores_ = score(args.data, pred_dir, args.k, args.seed, model, cfg, [p.region_m], codebook, raster_rows=False,
                    baselines=False, priors=(p.prior_rounds,), class_names=names)
    row = scores_[run_name("codebook", p.region_m, p.prior_rounds)]
    row["names"] = names
    print(f"\nnamed codebook: {kp} ids named after their majority class over the dataset "
          f"({len(set(names))} classes): mIoU {row['miou']:.3f}, pixel accuracy {row['pixel_acc']:.3f}, "
          f"one matching for the dataset {row['dataset_miou']:.3f}")
    return {f"named@{kp}": row}


def codebook_draws(args, checkpoint: Path, source: str, out: Path, cfg, regions: list[float],
                   priors: tuple[int, ...], res: dict[str, dict]) -> dict[str, dict]:
    """The same checkpoint exported with each of ``--codebook-seeds`` and scored (codebook rows only).

    A codebook is one random draw of sample windows and k-means seeding; one trained model spans
    several hundredths of mIoU across draws, so comparing predict-time settings on one draw says
    little. Returns ``{seed: scores}`` (the run's own seed included) and prints the rows and the mean.
    """
    seeds = [int(x) for x in args.codebook_seeds.split(",")] if args.codebook_seeds else []
    seeds = [x for x in dict.fromkeys(seeds) if x != args.seed]
    if not seeds:
        return {}
    names = [(run_name("codebook", r, p), r, p) for p in priors for r in regions]
    draws = {str(args.seed): {name: res[name] for name, _, _ in names}}
    for cs in seeds:
        export = export_checkpoint(checkpoint, out / f"export-cb{cs}",
                                   codebook=CodebookRequest(k=args.k, seed=cs, source=source))
        model = load_export(export)
        pred_dir = out / f"pred-cb{cs}"
        pred_dir.mkdir(exist_ok=True)
        draws[str(cs)] = score(args.data, pred_dir, args.k, args.seed, model, cfg, regions,
                               load_codebook(export, model.meta), raster_rows=False, baselines=False,
                               priors=priors)
    print(f"\ncodebook draws of the same model (codebook seeds {', '.join(draws)}; mIoU / pixel accuracy / "
          "mIoU with one matching for the dataset):")
    print("| region vote, prior rounds | " + " | ".join(f"seed {cs}" for cs in draws) + " | mean |")
    print("|---|" + "---|" * (len(draws) + 1))
    for name, region, prior in names:
        rows = [draws[cs][name] for cs in draws]
        cells = " | ".join(f"{r['miou']:.3f} / {r['pixel_acc']:.3f} / {r['dataset_miou']:.3f}" for r in rows)
        mean = [np.mean([r[key] for r in rows]) for key in ("miou", "pixel_acc", "dataset_miou")]
        print(f"| {f'{region:g} m' if region else 'off'}, {prior} | {cells} | "
              f"{mean[0]:.3f} / {mean[1]:.3f} / {mean[2]:.3f} |")
    return draws


if __name__ == "__main__":
    main()
