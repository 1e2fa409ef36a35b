"""Training-step throughput: the full step as ``fit`` runs it against a bare step on pre-made tensors.

(a) ``full``: :class:`~segcore.data.batches.PatchBatcher` crops a batch from the synthetic tile
    source, :func:`~segcore.augment.augment_batch` makes the two views, then
    :func:`~segcore.training.train_step` (forward of both views, losses, backward, optimizer step).
(b) ``bare``: the same :class:`~segcore.training.TwoViewNet` forward + backward + optimizer step on
    view tensors made once before timing.

Both run in this process with the same model, patch size and thread count; the table prints
images/s, (a)/(b), the student's forward FLOPs per image (convs counted by hand) and the achieved
GFLOP/s (a training step costs about 3 forward passes of each of the 2 views).

    python bench/train_step.py                       # 256 and 512, batch 4, CPU
    python bench/train_step.py --device cuda --amp 1 --channels-last
"""

from __future__ import annotations

import argparse
import time

import torch

from segcore.augment import augment_batch
from segcore.config import load_config
from segcore.data.batches import PatchBatcher
from segcore.data.sources import build_tile_source
from segcore.device import plan_placement
from segcore.models.student import flops_per_image
from segcore.training import _autocast, _to, build_trainee, step_generator, train_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(size: int, args) -> dict:
    cfg = load_config(
        overrides=[
            f"data.patch_sizes={size}",
            f"train.batch_size={args.batch}",
            f"data.synthetic_size={max(size, 256)}",
            "data.synthetic_count=4",
            f"train.device={args.device}",
            f"train.amp={'true' if args.amp else 'false'}",
        ]
    )
    placement = plan_placement(cfg.train.device, cfg.train.amp, False)
    trainee = build_trainee(cfg, placement)
    if args.channels_last:
        trainee.net.to(memory_format=torch.channels_last)
    batcher = PatchBatcher(build_tile_source(cfg), cfg.data.patch_sizes, args.batch, 0, cfg.train.multi_scale_mode)

    def full(step: int) -> None:
        train_step(trainee, None, batcher.batch(step), step, cfg, placement)

    views = augment_batch(batcher.batch(0), step_generator(0, 0), cfg.aug)
    view_a, view_b = (_to(v, placement.student) for v in views)
    gen = step_generator(0, 0)

    def bare(step: int) -> None:
        with _autocast(placement):
            terms = trainee.net(view_a, view_b, None, gen)
        trainee.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        trainee.optimizer.step()

    rates = {}
    for name, fn in (("full", full), ("bare", bare), ("full2", full), ("bare2", bare)):
        for s in range(args.warmup):
            fn(10_000 + s)
        _sync(placement.student)
        t0 = time.perf_counter()
        for s in range(args.steps):
            fn(s)
        _sync(placement.student)
        rates[name] = args.steps * args.batch / (time.perf_counter() - t0)
    full_ips, bare_ips = max(rates["full"], rates["full2"]), max(rates["bare"], rates["bare2"])
    flops = flops_per_image(trainee.core.model.student, size, size)["flops"]
    return {
        "size": size,
        "full": full_ips,
        "bare": bare_ips,
        "ratio": full_ips / bare_ips,
        "gflop": flops / 1e9,
        "gflops": 6 * flops * full_ips / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", type=int, default=0)
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        f"device {args.device}, amp {bool(args.amp)}, channels_last {args.channels_last}, batch {args.batch}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        "| patch | (a) full step img/s | (b) bare step img/s | (a)/(b) | student GFLOP/img (fwd) | achieved GFLOP/s |"
    )
    print("|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        r = measure(size, args)
        print(
            f"| {r['size']} | {r['full']:.2f} | {r['bare']:.2f} | {r['ratio']:.2f} | {r['gflop']:.3f} | "
            f"{r['gflops']:.1f} |"
        )


if __name__ == "__main__":
    main()
