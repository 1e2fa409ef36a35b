"""Training variants on the same shards, each scored on several codebook draws: which objective wins.

One training scored with one codebook says little on real imagery: the codebook draw alone moves
DeepGlobe mIoU by 0.03-0.08 (docs/benchmarks.md). This bench compares *training* changes on
(seed x codebook seed) pairs instead, in two steps that can run on different machines:

``train``: every variant (a name and its ``section.key=value`` overrides) for every seed, on shards
that already exist (``bench/quality_real.py`` builds them under ``bench/out/quality_real/<set>-s<seed>/
processed``), as parallel processes; the checkpoints land in ``--out`` as ``<variant>-s<seed>.pt``.
It needs no labels, no Prefect and no MLflow, so it runs on a lent GPU machine as well (rasterio
travels as a wheel; ``train.amp=false`` keeps the float32 arithmetic of the CPU).

``score``: every checkpoint in ``--out`` is exported with each codebook seed (fitted on the same
shards, as ``segcore export`` does) and predicted with the product defaults on every labelled image
at native resolution, then scored as ``bench/quality_real.py`` scores (per-image matching, pixel
accuracy, and one matching for the whole dataset). Results append to ``--out/scores.jsonl`` (a
rerun skips what is there) and the table of means per variant is printed.

    python bench/objective_sweep.py train --shards bench/out/quality_real/deepglobe-sample-s0/processed \
        --out bench/out/sweep --seeds 0,1,2 --parallel 8 base= steps1200=train.steps=1200 \
        tau05=distill.contrast_tau=0.5 train.amp=false
    python bench/objective_sweep.py score ../shared/data/deepglobe-sample --source-gsd 0.5 \
        --shards bench/out/quality_real/deepglobe-sample-s0/processed --out bench/out/sweep --codebook-seeds 0,1,2

Scoring uses the predict settings each checkpoint was trained with; ``section.key=value`` arguments
after ``score`` override them (e.g. the current vote defaults for checkpoints older than them).

A variant is ``NAME=OVERRIDE[+OVERRIDE...]`` (``base=`` for the defaults); an argument without
``NAME=`` in front of a dotted key applies to every variant.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality_real

from segcore.codebook import CodebookRequest, load_codebook
from segcore.config import load_config
from segcore.export import export_checkpoint
from segcore.predict import export_config
from segcore.runtime import load_export

DATASET = "bench"  # the dataset name bench/quality_real.py builds its shards under


def parse_variants(args: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """``["base=", "long=train.steps=1200", "train.amp=false"]`` -> variants and common overrides."""
    variants: dict[str, list[str]] = {}
    common: list[str] = []
    for arg in args:
        name, _, rest = arg.partition("=")
        if "." in name:  # section.key=value: for every variant
            common.append(arg)
        else:
            variants[name] = [x for x in rest.split("+") if x]
    if not variants:
        raise SystemExit("no variant given (e.g. base= long=train.steps=1200)")
    return variants, common


def train_one(shards: Path, out: Path, name: str, seed: int, overrides: list[str]) -> None:
    """One training (called in a child process): ``out/<name>-s<seed>.pt``."""
    from segcore.train import fit

    cfg = load_config(flags={"data.source": "shards", "data.processed_root": str(shards), "data.dataset": DATASET,
                             "train.seed": seed, "aug.seed": seed}, overrides=overrides)
    t0 = time.perf_counter()
    result = fit(cfg, out / "runs" / f"{name}-s{seed}", progress=False)
    target = out / f"{name}-s{seed}.pt"
    tmp = target.with_suffix(".pt.tmp")
    tmp.write_bytes(Path(result.checkpoint).read_bytes())
    tmp.replace(target)
    print(json.dumps({"variant": name, "seed": seed, "seconds": round(time.perf_counter() - t0, 1),
                      "overrides": overrides}), flush=True)


def train_all(args: argparse.Namespace) -> None:
    variants, common = parse_variants(args.variants)
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(v, s) for s in seeds for v in variants if not (args.out / f"{v}-s{s}.pt").exists()]
    args.out.mkdir(parents=True, exist_ok=True)
    running: list[subprocess.Popen] = []
    while jobs or running:
        running = [p for p in running if p.poll() is None]
        while jobs and len(running) < args.parallel:
            v, s = jobs.pop(0)
            cmd = [sys.executable, __file__, "_one", str(args.shards), str(args.out), v, str(s), *common, *variants[v]]
            running.append(subprocess.Popen(cmd))
        time.sleep(1)


def score_all(args: argparse.Namespace) -> None:
    results = args.out / "scores.jsonl"
    done = set()
    if results.exists():
        rows = map(json.loads, results.read_text().splitlines())
        done = {(r["variant"], r["seed"], r["codebook_seed"]) for r in rows}
    shards = str(args.shards / DATASET)
    for cs in (int(x) for x in args.codebook_seeds.split(",")):
        for ckpt in sorted(args.out.glob("*-s*.pt")):
            variant, _, seed = ckpt.stem.rpartition("-s")
            if (variant, int(seed), cs) in done:
                continue
            work = args.out / "score" / f"{ckpt.stem}-cb{cs}"
            request = CodebookRequest(k=args.k, seed=cs, source=shards)
            export = export_checkpoint(ckpt, work / "export", codebook=request)
            model = load_export(export)
            cfg = load_config(flags={"data.source_gsd": args.source_gsd}, overrides=args.overrides,
                              base=export_config(model.meta))
            (work / "pred").mkdir(parents=True, exist_ok=True)
            name = quality_real.run_name("codebook", cfg.predict.region_m, cfg.predict.prior_rounds)
            r = quality_real.score(args.data, work / "pred", args.k, int(seed), model, cfg, [cfg.predict.region_m],
                                   load_codebook(export, model.meta), raster_rows=False, baselines=False,
                                   priors=(cfg.predict.prior_rounds,))[name]
            with results.open("a") as f:
                f.write(json.dumps({"variant": variant, "seed": int(seed), "codebook_seed": cs, **r}) + "\n")
            print(f"{variant} seed {seed} codebook {cs}: mIoU {r['miou']:.3f}, acc {r['pixel_acc']:.3f}, "
                  f"dataset mIoU {r['dataset_miou']:.3f}", flush=True)
    print_table([json.loads(line) for line in results.read_text().splitlines()])


def print_table(rows: list[dict]) -> None:
    by = defaultdict(list)
    for r in rows:
        by[r["variant"]].append(r)
    print("| variant | pairs | mIoU per image | pixel acc | mIoU, one matching for the dataset | mIoU per seed |")
    print("|---|---|---|---|---|---|")
    for v, rs in by.items():
        seeds = defaultdict(list)
        for r in rs:
            seeds[r["seed"]].append(r["miou"])
        per_seed = " / ".join(f"{np.mean(x):.3f}" for _, x in sorted(seeds.items()))
        mean = [np.mean([r[key] for r in rs]) for key in ("miou", "pixel_acc", "dataset_miou")]
        print(f"| {v} | {len(rs)} | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} | {per_seed} |")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        shards, out, name, seed, *overrides = sys.argv[2:]
        train_one(Path(shards), Path(out), name, int(seed), overrides)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train every variant for every seed on existing shards")
    t.add_argument("--shards", type=Path, required=True, help="processed root holding the 'bench' shard dataset")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--seeds", default="0,1,2")
    t.add_argument("--parallel", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    t.add_argument("variants", nargs="+", help="NAME=OVERRIDE[+OVERRIDE...] per variant; section.key=value for all")
    s = sub.add_parser("score", help="score every checkpoint in --out on several codebook draws "
                       "(section.key=value arguments override each export's config)")
    s.add_argument("data", type=Path, help="folder with manifest.csv and classes.csv")
    s.add_argument("--source-gsd", type=float, required=True)
    s.add_argument("--shards", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--codebook-seeds", default="0,1,2")
    s.add_argument("--k", type=int, default=6)
    args, extra = parser.parse_known_args()  # score: section.key=value anywhere after the command
    if extra and (args.command != "score" or any(x.startswith("-") or "=" not in x for x in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    if args.command == "train":
        train_all(args)
    else:
        if not (args.data / "manifest.csv").is_file():
            raise SystemExit(f"skipped: {args.data / 'manifest.csv'} not found (point DATA at a shared/data set)")
        score_all(args)


if __name__ == "__main__":
    main()
