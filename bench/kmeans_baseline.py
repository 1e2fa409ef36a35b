"""Colour-only baselines on held-out synthetic scenes: the numbers a trained model has to beat.

Protocol (as for the DeepGlobe reference in ``shared/data/README.md``): per image K segments
(``eval.k``, 0 = number of classes), images subsampled to at most ``eval.max_side`` px (every s-th
pixel), segments matched one-to-one to classes by the Hungarian method, confusions summed over all
images; mIoU over classes present, and pixel accuracy. Scenes use seeds that training never uses.

    python bench/kmeans_baseline.py                      # seeds 1000..1007, 512 px
    python bench/kmeans_baseline.py --first-seed 2000 --count 4 --size 1024
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np

from segcore.config import DataConfig, EvalConfig
from segcore.data.slic import compute_slic
from segcore.data.synthetic import generate_scene
from segcore.metrics import MatchedIoU, ProxyMetrics, kmeans_fit, kmeans_rgb_labels


def slic_kmeans_labels(image: np.ndarray, k: int, seed: int, region_size: int, compactness: float) -> np.ndarray:
    """SLIC superpixels, then k-means on their mean RGB colours; ``int64 (H, W)`` ids ``0..k-1``."""
    seg = compute_slic(image, None, region_size, compactness)  # (H, W) ids 1..S
    n = int(seg.max()) + 1
    counts = np.bincount(seg.ravel(), minlength=n)[1:]
    means = np.stack([np.bincount(seg.ravel(), image[..., c].ravel(), minlength=n)[1:] for c in range(3)], 1)
    means /= counts[:, None]
    centres = kmeans_fit(means, k, seed)
    seg_label = ((means[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    return np.concatenate([[0], seg_label])[seg]


def run(seeds: list[int], size: int, cfg: EvalConfig, data: DataConfig, num_classes: int = 6) -> list[dict]:
    k = cfg.k or num_classes
    methods: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
        "k-means on RGB pixels": lambda img, s: kmeans_rgb_labels(img, k, seed=s),
        "SLIC superpixels, then k-means on their mean colours": lambda img, s: slic_kmeans_labels(
            img, k, s, data.slic_region_size, data.slic_compactness
        ),
    }
    scenes = [generate_scene(size, seed, num_classes) for seed in seeds]
    rows = []
    for name, method in methods.items():
        scored, proxy, seconds = MatchedIoU(num_classes), ProxyMetrics(k, cfg.speckle_px), 0.0
        for scene in scenes:
            step = max(1, math.ceil(max(scene.labels.shape) / cfg.max_side))
            image, target = scene.image[::step, ::step], scene.labels[::step, ::step]
            start = time.perf_counter()
            pred = method(np.ascontiguousarray(image), scene.seed)
            seconds += time.perf_counter() - start
            scored.update(pred, target)
            proxy.update(pred)
        rows.append({"method": name, **scored.compute(), **proxy.compute(), "seconds": seconds / len(scenes)})
    return rows


def markdown(rows: list[dict], num_classes: int) -> str:
    head = "| method | mIoU | pixel acc | majority mIoU | " + " | ".join(f"IoU {c}" for c in range(1, num_classes + 1))
    lines = [head + " | s / image |", "|" + "---|" * (num_classes + 5)]
    for r in rows:
        per_class = " | ".join(f"{r.get(f'iou/{c}', float('nan')):.3f}" for c in range(1, num_classes + 1))
        lines.append(
            f"| {r['method']} | {r['miou']:.3f} | {r['pixel_acc']:.3f} | {r['majority/miou']:.3f} | "
            f"{per_class} | {r['seconds']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first-seed", type=int, default=1000, help="seed of the first held-out scene")
    parser.add_argument("--count", type=int, default=8, help="number of scenes (consecutive seeds)")
    parser.add_argument("--size", type=int, default=512, help="scene side in px")
    args = parser.parse_args()
    seeds = list(range(args.first_seed, args.first_seed + args.count))
    rows = run(seeds, args.size, EvalConfig(), DataConfig())
    print(f"synthetic scenes, seeds {seeds[0]}..{seeds[-1]}, {args.size} px, K = 6, Hungarian matched, summed")
    print(markdown(rows, 6))
    for r in rows:
        print(
            f"{r['method']}: proxy/speckle {r['proxy/speckle']:.3f}, proxy/boundary_density "
            f"{r['proxy/boundary_density']:.3f}, proxy/utilization {r['proxy/utilization']:.3f}"
        )


if __name__ == "__main__":
    main()
