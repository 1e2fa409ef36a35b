"""DeepGlobe sample: train on its 13 images without labels, then score by the README protocol.

Protocol (``shared/data/README.md``): every image downsampled to at most 512 px (every s-th pixel,
s = ceil(2448 / 512) = 5), K = 6 segments per image, Hungarian one-to-one matching, labels <= 0
ignored, confusions summed over the 13 images; mIoU over classes present, pixel accuracy.

Training sees the same images at the same scale (every 5th pixel, as the protocol evaluates them)
but never their labels: the targets are replaced by zeros before training starts. The RGB k-means
baseline is scored in the same run, on the same images.

    python bench/deepglobe.py --steps 1500 data.patch_sizes=192
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from segcore.config import load_config
from segcore.data.batches import InMemoryTiles
from segcore.data.slic import compute_slic
from segcore.evaluate import evaluate, raster_data
from segcore.train import fit

SHARED = Path(os.environ.get("SEGCORE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def unlabelled_samples(manifest: Path, stride: int, cfg) -> list[dict]:
    """The images read every ``stride``-th pixel, with SLIC, and with all-zero targets."""
    import pandas as pd
    import rasterio

    rows = pd.read_csv(manifest)
    samples = []
    for image in rows["image"]:
        with rasterio.open(manifest.parent / image) as ds:
            rgb = ds.read([1, 2, 3])[:, ::stride, ::stride]  # (3, h, w) uint8
        hwc = np.ascontiguousarray(rgb.transpose(1, 2, 0))
        valid = np.ones(hwc.shape[:2], bool)
        slic = compute_slic(hwc, valid, cfg.data.slic_region_size, cfg.data.slic_compactness)
        samples.append({
            "image": torch.from_numpy(rgb.astype(np.float32) / 255.0),
            "slic": torch.from_numpy(slic),
            "target": torch.zeros(hwc.shape[:2], dtype=torch.int64),  # labels never used for training
            "valid": torch.from_numpy(valid),
            "meta": {"source": str(image), "tile_id": Path(image).stem},
        })
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/out/deepglobe")
    parser.add_argument("--data", default=str(SHARED / "deepglobe-sample"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    manifest = Path(args.data) / "manifest.csv"
    if not manifest.is_file():
        raise SystemExit(f"skipped: {manifest} not found (set SEGCORE_SHARED_DATA to the shared data folder)")
    cfg = load_config(flags={"train.steps": args.steps, "train.seed": args.seed, "aug.seed": args.seed},
                      overrides=["data.patch_sizes=192", *args.overrides])
    out = Path(args.out)
    t0 = time.perf_counter()
    samples = unlabelled_samples(manifest, 5, cfg)
    prep = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = fit(cfg, out / "run", source=InMemoryTiles(samples, args.seed))
    train_s = time.perf_counter() - t0
    data = raster_data(manifest, max_side=512, num_classes=6)
    eval_cfg = cfg.replace(**{"eval.k": 6, "eval.max_side": 512})
    ours = evaluate(str(result.checkpoint), data, eval_cfg, out / "eval")
    base = evaluate("kmeans", data, eval_cfg.replace(**{"eval.num_overlays": 0}), out / "kmeans")
    print(f"\n{len(samples)} images (every 5th pixel), SLIC {prep:.0f} s, training {args.steps} steps "
          f"in {train_s / 60:.1f} min on {torch.get_num_threads()} CPU threads")
    print("| method | mIoU | pixel accuracy | cost per image |")
    print("|---|---|---|---|")
    print(f"| k-means on RGB pixels (this run) | {base['val/miou']:.3f} | {base['val/pixel_acc']:.3f} | "
          f"{base['cost/seconds_per_image']:.2f} s CPU |")
    print(f"| segcore student (this run) | {ours['val/miou']:.3f} | {ours['val/pixel_acc']:.3f} | "
          f"{ours['cost/seconds_per_image']:.2f} s CPU (+ {train_s / 60:.0f} min training, once) |")
    (out / "deepglobe.json").write_text(json.dumps({"model": ours, "kmeans": base, "train_seconds": train_s,
                                                    "steps": args.steps, "overrides": args.overrides}, indent=2))


if __name__ == "__main__":
    main()
