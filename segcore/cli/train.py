"""``segcore train``: distillation training of the student (also ``python -m segcore.train``)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from segcore.checks import seed_arg
from segcore.config import Config, load_config

HELP = "train the student (unsupervised; labels are never used)"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML or JSON config file (nested by section)")
    p.add_argument("--synthetic", action="store_true", help="train on generated scenes (data.source=synthetic)")
    p.add_argument("--steps", type=int, metavar="N", help="optimizer steps (train.steps)")
    p.add_argument(
        "--seed", type=seed_arg, metavar="N",
        help="seed of init, data order and augmentation, 0..2**32-1 (train.seed, aug.seed)"
    )
    p.add_argument("--device", choices=("auto", "cuda", "mps", "cpu"), help="device (train.device; default auto)")
    p.add_argument(
        "--amp", type=int, choices=(0, 1), help="mixed precision off/on (train.amp; default: on for CUDA only)"
    )
    p.add_argument(
        "--disable-autoencoder", action="store_true", help="no reconstruction decoder (autoencoder.enabled=false)"
    )
    p.add_argument("--ae-lambda", type=float, metavar="F", help="reconstruction weight (autoencoder.lambda_recon)")
    p.add_argument(
        "--patch-sizes", metavar="S[,S...]", help="patch sizes drawn per step, e.g. 256,512 (data.patch_sizes)"
    )
    p.add_argument("--use-teacher", action="store_true", help="distil from a frozen teacher (teacher.enabled=true)")
    p.add_argument("--nproc", type=int, metavar="N", help="processes for DDP training via torchrun (train.nproc)")
    p.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint written by a previous run")
    p.add_argument(
        "--run-dir", metavar="DIR",
        help="run directory: new, empty or an earlier run's (default: <train.out_dir>/<timestamp>-<config hash>)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides, applied last")


def config_from_args(args: argparse.Namespace) -> Config:
    """File, then flags, then ``section.key=value`` overrides."""
    flags: dict = {}
    if args.synthetic:
        flags["data.source"] = "synthetic"
    if args.steps is not None:
        flags["train.steps"] = args.steps
    if args.seed is not None:
        flags["train.seed"] = args.seed
        flags["aug.seed"] = args.seed
    if args.device is not None:
        flags["train.device"] = args.device
    if args.amp is not None:
        flags["train.amp"] = bool(args.amp)
    if args.disable_autoencoder:
        flags["autoencoder.enabled"] = False
    if args.ae_lambda is not None:
        flags["autoencoder.lambda_recon"] = args.ae_lambda
    if args.patch_sizes:
        flags["data.patch_sizes"] = args.patch_sizes
    if args.use_teacher:
        flags["teacher.enabled"] = True
    if args.nproc is not None:
        flags["train.nproc"] = args.nproc
    return load_config(args.config, flags=flags, overrides=args.overrides)


def default_run_dir(cfg: Config) -> Path:
    return Path(cfg.train.out_dir) / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.hash()[:8]}"


def run(args: argparse.Namespace) -> int:
    from segcore.safety import claim_output_dir, remove_unused_run_dir

    cfg = config_from_args(args)
    run_dir = claim_output_dir(Path(args.run_dir) if args.run_dir else default_run_dir(cfg), "run",
                               what="--run-dir")
    created = not run_dir.exists()
    try:
        return _train(args, cfg, run_dir)
    except BaseException:
        if created:  # a failed start (e.g. a bad --resume) leaves no empty run directory behind
            remove_unused_run_dir(run_dir)
        raise


def _train(args: argparse.Namespace, cfg: Config, run_dir: Path) -> int:
    if cfg.train.nproc > 1:
        from segcore.distributed import launch_torchrun

        return launch_torchrun(cfg, run_dir, resume=args.resume)
    from segcore.training import fit

    result = fit(cfg, run_dir, resume=args.resume, progress=not args.no_progress)
    summary = {
        "run_dir": str(result.run_dir),
        "checkpoint": str(result.checkpoint),
        "step": result.step,
        "best_loss": result.best_loss,
        "best_step": result.best_step,
        "images_per_s": round(result.images_per_s, 2),
        "last": {k: round(v, 5) for k, v in result.last_terms.items()},
    }
    print(json.dumps(summary, indent=2))
    return 0
