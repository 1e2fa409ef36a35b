"""Training throughput against torch's intra-op thread count (``train.threads``), in one process.

Measures the full training step (batch from the tile source, two views, forward, losses, backward,
optimizer step) at each thread count, interleaved ``--rounds`` times so that a change in the
machine's load hits every setting alike, and prints images/s with the ratio to the first setting.
The load average at the start and the end is printed too: on a busy machine, more threads than
free cores costs far more than it gains (threads wait on each other at every op).

    python bench/threads.py                      # 1 and 2 threads, patch 256, batch 4
    python bench/threads.py --threads 1,2,4 --size 192
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from segcore.config import load_config
from segcore.data.batches import PatchBatcher
from segcore.data.sources import build_tile_source
from segcore.device import plan_placement
from segcore.training import build_trainee, train_step


def prepare_steps(cfg, steps: int, seed: int):
    """``(trainee, placement, batches)``: a CPU trainee of ``cfg`` and ``steps`` batches drawn from its
    tile source beforehand, so that timing sees the training step alone."""
    placement = plan_placement("cpu", False, False)
    torch.manual_seed(0)
    trainee = build_trainee(cfg, placement)
    batcher = PatchBatcher(build_tile_source(cfg), cfg.data.patch_sizes, cfg.train.batch_size, seed,
                           cfg.train.multi_scale_mode)
    return trainee, placement, [batcher.batch(s) for s in range(steps)]


def step_images_per_s(trainee, placement, batches, cfg) -> float:
    """Images/s of :func:`~segcore.training.train_step` over ``batches`` (after one warm-up step)."""
    train_step(trainee, None, batches[0], 0, cfg, placement)
    t0 = time.perf_counter()
    for s, batch in enumerate(batches):
        train_step(trainee, None, batch, s, cfg, placement)
    return len(batches) * cfg.train.batch_size / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    cfg = load_config(overrides=[f"data.patch_sizes={args.size}", f"train.batch_size={args.batch}",
                                 "data.synthetic_count=4", f"data.synthetic_size={max(256, args.size)}",
                                 "train.device=cpu"])
    trainee, placement, batches = prepare_steps(cfg, args.steps, seed=0)
    load0 = os.getloadavg()[0]
    best = dict.fromkeys(counts, 0.0)
    for _ in range(args.rounds):
        for n in counts:
            torch.set_num_threads(n)
            best[n] = max(best[n], step_images_per_s(trainee, placement, batches, cfg))
    print(f"patch {args.size}, batch {args.batch}, {os.cpu_count()} CPUs, best of {args.rounds} interleaved rounds, "
          f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    print("| train.threads | images/s | vs first |")
    print("|---|---|---|")
    for n in counts:
        print(f"| {n} | {best[n]:.2f} | {best[n] / best[counts[0]]:.2f} |")


if __name__ == "__main__":
    main()
