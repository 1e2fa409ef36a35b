"""Codebook vs per-raster classes on real imagery, scored by the protocol of ``shared/data/README.md``.

One model per dataset (trained without labels as in ``bench/quality_real.py``: shards from the
images alone, then training; or ``--checkpoint``), exported with a dataset codebook of ``K``
classes fitted on the training shards. Every image is then predicted twice with
``segcore.predict.predict_raster`` at its native resolution:

* ``raster``: prototypes fitted per image (``K`` segments), what ``segcore predict`` did before;
* ``codebook``: the export's ``K`` dataset prototypes with frozen norm statistics.

Scores (labels read only by the scorer, every s-th pixel, s = ceil(longer side / 512)):

* **per image** (the README protocol): segments matched one-to-one to classes per image
  (Hungarian), confusions summed; mIoU over the classes present, pixel accuracy;
* **one legend**: a single one-to-one matching of ids to classes for *all* images together, i.e.
  what a GIS user gets who colours every raster with one legend. Only ids that mean the same in
  every raster score well here.

    python bench/codebook_modes.py ../shared/data/deepglobe-sample --source-gsd 0.5 train.steps=400
    python bench/codebook_modes.py ../shared/data/dronedeploy-sample --source-gsd 0.1 train.steps=400
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import rasterio
from quality_real import num_classes, read_pairs, strided, train  # bench/ is on sys.path as a script

from segcore.codebook import CodebookRequest, load_codebook
from segcore.config import load_config
from segcore.export import export_checkpoint
from segcore.metrics import matched_confusion, scores
from segcore.predict import export_config, predict_raster
from segcore.runtime import load_export

MAX_SIDE = 512


def score_modes(root: Path, out: Path, model, codebook, cfg, k: int) -> dict[str, dict]:
    """Predict every image in both modes; per-image and one-legend scores of each."""
    c = num_classes(root)
    per_image = {m: np.zeros((c + 1, c + 1), np.int64) for m in ("raster", "codebook")}
    pooled: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"raster": [], "codebook": []}
    seconds = {"raster": 0.0, "codebook": 0.0}
    for image, label in read_pairs(root):
        with rasterio.open(label) as ds:
            s = max(1, math.ceil(max(ds.width, ds.height) / MAX_SIDE))
        target = strided(label, s, 1).astype(np.int64)
        for mode in ("raster", "codebook"):
            dst = out / mode / f"{image.stem}.tif"
            t0 = time.perf_counter()
            predict_raster(image, dst, model, k, data_cfg=cfg.data, progress=False,
                           codebook=codebook if mode == "codebook" else None)
            seconds[mode] += time.perf_counter() - t0
            pred = strided(dst, s, 1).astype(np.int64)
            per_image[mode] += matched_confusion(pred, target, c)
            pooled[mode].append((pred.reshape(-1), target.reshape(-1)))
    result = {}
    for mode in ("raster", "codebook"):
        preds = np.concatenate([p for p, _ in pooled[mode]])[None]
        targets = np.concatenate([t for _, t in pooled[mode]])[None]
        result[mode] = {"per_image": scores(per_image[mode]),
                        "one_legend": scores(matched_confusion(preds, targets, c)), "seconds": seconds[mode]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder with manifest.csv and classes.csv")
    parser.add_argument("--source-gsd", type=float, required=True, help="metres per pixel of the images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=6, help="segments per image and codebook classes (protocol K)")
    parser.add_argument("--out", type=Path, default=None, help="default bench/out/codebook_modes/<name>-s<seed>")
    parser.add_argument("--checkpoint", type=Path, help="skip building and training; use this checkpoint")
    parser.add_argument("overrides", nargs="*", help="section.key=value changes to the defaults")
    args = parser.parse_intermixed_args()
    if not (args.data / "manifest.csv").is_file():
        raise SystemExit(f"skipped: {args.data / 'manifest.csv'} not found (point DIR at a shared/data set)")
    out = args.out or Path("bench/out/codebook_modes") / f"{args.data.name}-s{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    built = trained = float("nan")
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint, built, trained = train(args.data, out, args.seed, args.source_gsd, args.overrides)
    shards = out / "processed" / "bench"
    source = str(shards) if (shards / "manifest.json").is_file() else str(args.data / "images")
    t0 = time.perf_counter()
    export = export_checkpoint(checkpoint, out / "export",
                               codebook=CodebookRequest(k=args.k, seed=args.seed, source=source))
    fit_s = time.perf_counter() - t0
    model = load_export(export)
    cfg = load_config(flags={"data.source_gsd": args.source_gsd}, overrides=args.overrides,
                      base=export_config(model.meta))
    res = score_modes(args.data, out, model, load_codebook(export, model.meta), cfg, args.k)
    print(f"\n{args.data.name}: {len(read_pairs(args.data))} images, seed {args.seed}, K = {args.k}, "
          f"data.gsd={cfg.data.gsd} (source {args.source_gsd} m), overrides {args.overrides or 'none'}; "
          f"shards {built:.0f} s, training {trained / 60:.1f} min, export + codebook {fit_s:.0f} s "
          f"(codebook from {model.meta['codebook']['source']})")
    print("| classes | mIoU per image | pixel acc. per image | mIoU one legend | pixel acc. one legend | predict s |")
    print("|---|---|---|---|---|---|")
    for mode in ("raster", "codebook"):
        r = res[mode]
        print(f"| {mode} | {r['per_image']['miou']:.3f} | {r['per_image']['pixel_acc']:.3f} | "
              f"{r['one_legend']['miou']:.3f} | {r['one_legend']['pixel_acc']:.3f} | {r['seconds']:.0f} |")
    (out / "codebook_modes.json").write_text(json.dumps(
        {"data": str(args.data), "seed": args.seed, "k": args.k, "overrides": args.overrides,
         "train_seconds": trained, "codebook": model.meta["codebook"], "scores": res}, indent=2, default=float))


if __name__ == "__main__":
    main()
