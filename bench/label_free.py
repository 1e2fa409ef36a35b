"""Does a label-free criterion track mIoU? Rank correlation over checkpoints and seeds, two real sets.

For each dataset (DeepGlobe sample: 13 images at stride 5; DroneDeploy sample: the first
``--chips`` chips at full size), two trainings (seeds 0 and 1) without labels save the student
at several steps; every saved student is scored by the README protocol (K = 6, Hungarian
matching) and, in the same pass, by the label-free proxies of :mod:`segcore.evaluate`
(utilisation, speckle, boundary density, two-view consistency). Reported: Spearman's rank
correlation between each proxy and mIoU over those checkpoints, per dataset. A criterion that
the pipeline could promote on without labels must rank checkpoints as mIoU does on both sets.

    python bench/label_free.py --steps 240 --out bench/out/label_free
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench module below

from deepglobe import unlabelled_samples

from segcore.config import load_config
from segcore.data.batches import InMemoryTiles
from segcore.evaluate import evaluate, raster_data
from segcore.models import build_segmenter
from segcore.training import fit

SHARED = Path(os.environ.get("SEGCORE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
PROXIES = ("proxy/two_view_consistency", "proxy/utilization", "proxy/speckle", "proxy/boundary_density")


def subset_manifest(src: Path, n: int, out: Path) -> Path:
    lines = src.read_text().splitlines()
    out.mkdir(parents=True, exist_ok=True)
    rows = [",".join(str(src.parent / p) if i < 2 else p for i, p in enumerate(r.split(","))) for r in lines[1:n + 1]]
    (out / "manifest.csv").write_text(lines[0] + "\n" + "\n".join(rows) + "\n")
    (out / "classes.csv").write_text((src.parent / "classes.csv").read_text())
    return out / "manifest.csv"


def snapshots(cfg, samples, seed: int, at: tuple[int, ...], run_dir: Path) -> dict[int, dict]:
    """Train ``cfg`` with ``seed``; the student's weights after each step in ``at``."""
    saved: dict[int, dict] = {}

    def keep(step: int, trainee) -> None:
        if step in at:
            saved[step] = copy.deepcopy(trainee.core.model.state_dict())

    cfg = cfg.replace(**{"train.seed": seed, "aug.seed": seed, "train.steps": max(at)})
    fit(cfg, run_dir, source=InMemoryTiles(samples, seed), progress=False, on_step=keep)
    return saved


def score(cfg, state: dict, data, out: Path) -> dict[str, float]:
    model = build_segmenter(cfg)
    model.load_state_dict(state)
    return evaluate(model, data, cfg.replace(**{"eval.k": 6, "eval.max_side": 512, "eval.num_overlays": 0}), out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--chips", type=int, default=24)
    parser.add_argument("--out", default="bench/out/label_free")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    at = tuple(sorted({1, args.steps // 8, args.steps // 4, args.steps // 2, args.steps}))
    out = Path(args.out)
    cfg = load_config(overrides=["data.patch_sizes=192", *args.overrides])
    sets = {"deepglobe": (SHARED / "deepglobe-sample" / "manifest.csv", 5),
            "dronedeploy": (subset_manifest(SHARED / "dronedeploy-sample" / "manifest.csv", args.chips,
                                            out / "dronedeploy-subset"), 1)}
    report: dict[str, dict] = {}
    for name, (manifest, stride) in sets.items():
        if not manifest.is_file():
            raise SystemExit(f"skipped: {manifest} not found (set SEGCORE_SHARED_DATA)")
        t0 = time.perf_counter()
        samples = unlabelled_samples(manifest, stride, cfg)
        data = raster_data(manifest, max_side=512, num_classes=6)
        rows = []
        for seed in (0, 1):
            for step, state in snapshots(cfg, samples, seed, at, out / name / f"run-{seed}").items():
                m = score(cfg, state, data, out / name / f"eval-{seed}-{step}")
                rows.append({"seed": seed, "step": step, "miou": m["val/miou"], **{p: m[p] for p in PROXIES}})
                print(json.dumps(rows[-1]), flush=True)
        miou = np.array([r["miou"] for r in rows])
        rho = {p: float(spearmanr(miou, [r[p] for r in rows]).statistic) for p in PROXIES}
        report[name] = {"rows": rows, "spearman": rho, "seconds": time.perf_counter() - t0}
        print(name, json.dumps(rho), flush=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
