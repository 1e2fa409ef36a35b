"""Quality on held-out synthetic scenes: train, then score against RGB k-means on the same scenes.

Training draws its scenes from ``scene_seed(TRAIN_NAMESPACE + seed, i)``; evaluation uses
``generate_scene(size, s)`` for ``s`` in ``--first-seed ..`` (default 1000..1007, 512 px: the scenes
of ``bench/kmeans_baseline.py``), which training never sees. Every method gets K = 6 segments per
image, Hungarian matching per image, confusions summed over the scenes. Besides RGB k-means, the
table scores k-means on the fixed colour/texture descriptors the descriptor-affinity term distils
(:func:`segcore.losses.descriptors.region_descriptors`), so the student is compared with what it
is taught as well as with raw colour.

    python bench/quality.py --steps 600 train.batch_size=4 data.patch_sizes=192
    python bench/quality.py --checkpoint runs/quality/checkpoints/last.pt   # score only
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from segcore.config import load_config
from segcore.data.synthetic import CLASS_NAMES, generate_scene
from segcore.evaluate import EvalData, EvalImage, evaluate
from segcore.metrics import kmeans_fit
from segcore.train import fit


def heldout(first_seed: int, count: int, size: int) -> EvalData:
    def images() -> Iterator[EvalImage]:
        for seed in range(first_seed, first_seed + count):
            scene = generate_scene(size, seed)
            yield EvalImage(f"scene-{seed}", scene.image, scene.labels.astype(np.int64),
                            np.ones(scene.labels.shape, bool), 1)

    return EvalData(f"synthetic seeds {first_seed}..{first_seed + count - 1}", len(CLASS_NAMES), images)


class DescriptorKMeans:
    """k-means on the region descriptors at stride 4 (3x3 mean, standardised per image), upsampled."""

    name = "kmeans-descriptors"
    max_k = 16

    def __init__(self, seed: int):
        self.seed = seed

    def segment(self, image: np.ndarray, k: int, valid: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        from segcore.losses.descriptors import region_descriptors

        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None] / 255.0
        d = F.avg_pool2d(region_descriptors(x), 3, 1, 1, count_include_pad=False)[0]  # (C, h, w)
        c, h, w = d.shape
        feats = d.reshape(c, -1).T.double().numpy()
        feats = (feats - feats.mean(0)) / np.maximum(feats.std(0), 1e-3)
        centres = kmeans_fit(feats[:: max(1, len(feats) // 20000)], k, seed=self.seed)
        dists = ((feats[:, None, :] - centres[None]) ** 2).sum(-1)
        labels = dists.argmin(1).reshape(h, w)
        return np.repeat(np.repeat(labels, 4, 0), 4, 1)[: image.shape[0], : image.shape[1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", help="score this checkpoint instead of training")
    parser.add_argument("--out", default="bench/out/quality")
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config(flags={"train.steps": args.steps, "train.seed": args.seed, "aug.seed": args.seed},
                      overrides=args.overrides)
    out = Path(args.out)
    train_s = 0.0
    checkpoint = args.checkpoint
    if checkpoint is None:
        t0 = time.perf_counter()
        result = fit(cfg, out / "run", progress=True)
        train_s = time.perf_counter() - t0
        checkpoint = result.checkpoint
    data = heldout(args.first_seed, args.count, args.size)
    model = evaluate(str(checkpoint), data, cfg.replace(**{"eval.k": 6}), out / "eval")
    base = evaluate("kmeans", data, cfg.replace(**{"eval.k": 6, "eval.num_overlays": 0}), out / "kmeans")
    desc = evaluate(DescriptorKMeans(args.seed), data, cfg.replace(**{"eval.k": 6, "eval.num_overlays": 0}),
                    out / "kmeans-descriptors")
    rows = [("trained student (this run)", model), ("k-means on RGB pixels", base),
            ("k-means on the distilled descriptors", desc)]
    print(f"\ntraining: {args.steps} steps in {train_s / 60:.1f} min; overrides: {' '.join(args.overrides) or '-'}")
    print(f"data: {data.name}, {args.size} px, K = 6\n")
    print("| method | mIoU | pixel acc | majority mIoU | " + " | ".join(f"IoU {i}" for i in range(1, 7)) + " |")
    print("|---|---|---|---|" + "---|" * 6)
    for name, m in rows:
        ious = " | ".join(f"{m.get(f'val/iou/{i}', float('nan')):.3f}" for i in range(1, 7))
        print(f"| {name} | {m['val/miou']:.3f} | {m['val/pixel_acc']:.3f} | {m['val/majority/miou']:.3f} | {ious} |")
    print(f"\nmIoU gain over RGB k-means: {model['val/miou'] - base['val/miou']:+.3f}")
    (out / "quality.json").write_text(json.dumps({"model": model, "kmeans": base, "kmeans_descriptors": desc,
                                                  "train_seconds": train_s,
                                                  "steps": args.steps, "overrides": args.overrides}, indent=2))


if __name__ == "__main__":
    main()
