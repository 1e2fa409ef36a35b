"""Data-parallel training with ``torchrun`` and DistributedDataParallel.

``train.nproc > 1`` (``segcore train --nproc N``) launches::

    python -m torch.distributed.run --standalone --nproc_per_node N -m segcore.distributed --config C --run-dir D

Each process joins the process group (NCCL on GPUs, one GPU per local rank; gloo on CPUs), builds
its share of the data (the shard loader partitions tiles over ranks x DataLoader workers) and runs
:func:`segcore.training.fit` with its rank. Gradients are averaged by DDP; only rank 0 writes
checkpoints, metrics and logs. Several machines: run the same module with
``torchrun --nnodes M --node_rank R --rdzv_backend c10d --rdzv_endpoint HOST:PORT --nproc_per_node N``
on each (see ``docs/scaling.md``).

Logging into a tracker: ``--logger module:factory --logger-arg ARG`` builds the logger in each
process as ``factory(ARG)`` (e.g. ``tasks.tracking:MlflowTrainLogger`` with the MLflow run id);
:func:`fit` only lets rank 0 use it. segcore itself never imports the tracker.

Debugging: with ``SEGCORE_DDP_CHECKSUMS=DIR`` every rank appends one JSON line per optimizer step
to ``DIR/rank<R>.jsonl``: the step, a sha256 of its parameters and the ``[epoch, tile_id]`` of the
tiles of its batch (tests check that ranks agree and that no tile repeats within an epoch).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from segcore.config import Config

log = logging.getLogger(__name__)

CHECKSUMS_ENV = "SEGCORE_DDP_CHECKSUMS"


def torchrun_command(cfg: Config, run_dir: Path, resume: str | None = None, logger: str = "",
                     logger_arg: str = "", stop_at: int | None = None) -> list[str]:
    """The command that trains ``cfg`` on ``cfg.train.nproc`` local processes."""
    config_path = Path(run_dir) / "launch-config.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.train.nproc}",
           "-m", "segcore.distributed", "--config", str(config_path), "--run-dir", str(run_dir)]
    if resume:
        cmd += ["--resume", str(resume)]
    if logger:
        cmd += ["--logger", logger, "--logger-arg", logger_arg]
    if stop_at is not None:
        cmd += ["--stop-at", str(stop_at)]
    return cmd


def launch_torchrun(cfg: Config, run_dir: str | Path, resume: str | None = None, *, logger: str = "",
                    logger_arg: str = "", stop_at: int | None = None, env: dict[str, str] | None = None) -> int:
    """Write the resolved config next to the run and start ``torchrun``; returns its exit code.

    ``logger``/``logger_arg``: see the module docstring. ``stop_at``: stop (and checkpoint) after
    that step, as if interrupted. ``env``: the processes' environment (default: this one).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / ".launch-config.json.tmp"
    tmp.write_text(cfg.to_json())
    os.replace(tmp, run_dir / "launch-config.json")
    cmd = torchrun_command(cfg, run_dir, resume, logger, logger_arg, stop_at)
    log.info("launching: %s", " ".join(cmd))
    return subprocess.run(cmd, check=False, env=env).returncode


def _init_process_group():
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), local_rank, backend


def load_logger(spec: str, arg: str):
    """``factory(arg)`` for ``spec`` = ``module:factory``; ``None`` for an empty spec."""
    if not spec:
        return None
    module, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"--logger {spec!r} must be module:factory, e.g. tasks.tracking:MlflowTrainLogger")
    return getattr(importlib.import_module(module), name)(arg)


class RecordingSource:
    """A tile source that remembers ``[epoch, tile_id]`` of every tile it hands out."""

    def __init__(self, source):
        self.source = source
        self.taken: list[list[Any]] = []

    def epoch_tiles(self, epoch: int) -> Iterator[dict[str, Any]]:
        for tile in self.source.epoch_tiles(epoch):
            self.taken.append([epoch, tile["meta"]["tile_id"]])
            yield tile


class StepChecksums:
    """``on_step`` hook: one JSON line per step with a parameter checksum and the tiles consumed.

    Each step takes the last ``batch_size`` tiles handed out; tiles handed out before them (a
    resumed run skipping what the checkpoint already consumed) are recorded as ``skipped``.
    """

    def __init__(self, path: Path, source: RecordingSource, batch_size: int):
        self.path, self.source, self.batch_size = path, source, batch_size
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, step: int, trainee) -> None:
        digest = hashlib.sha256()
        for name, p in trainee.core.named_parameters():
            digest.update(name.encode())
            digest.update(p.detach().cpu().contiguous().numpy().tobytes())
        taken, self.source.taken = self.source.taken, []
        cut = len(taken) - self.batch_size
        record = {"step": step, "params_sha256": digest.hexdigest(), "tiles": taken[cut:], "skipped": taken[:cut]}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _debug_hooks(cfg: Config, rank: int, world: int):
    """``(source, on_step)`` for :func:`fit`: recording ones when ``SEGCORE_DDP_CHECKSUMS`` is set."""
    out = os.environ.get(CHECKSUMS_ENV)
    if not out:
        return None, None
    from segcore.data.sources import build_tile_source

    source = RecordingSource(build_tile_source(cfg, rank=rank, world_size=world))
    return source, StepChecksums(Path(out) / f"rank{rank}.jsonl", source, cfg.train.batch_size)


def write_result(run_dir: Path, result, world: int) -> Path:
    """``run_dir/fit-result.json``: what :func:`fit` returned on rank 0, for the launching process.

    ``images_per_s`` is rank 0's rate; ``global_images_per_s`` counts every rank (each takes
    ``train.batch_size`` images per step).
    """
    out = run_dir / "fit-result.json"
    out.write_text(json.dumps({
        "checkpoint": str(result.checkpoint), "step": result.step, "best_loss": result.best_loss,
        "best_step": result.best_step, "last_terms": result.last_terms, "world_size": world,
        "images_per_s": result.images_per_s, "global_images_per_s": result.images_per_s * world,
    }, indent=2, sort_keys=True) + "\n")
    return out


def worker_main(argv: list[str] | None = None) -> int:
    """Entry point of one torchrun process."""
    parser = argparse.ArgumentParser(prog="python -m segcore.distributed")
    parser.add_argument("--config", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--resume")
    parser.add_argument("--logger", default="", help="module:factory building the train logger (rank 0 uses it)")
    parser.add_argument("--logger-arg", default="", help="the factory's argument, e.g. an MLflow run id")
    parser.add_argument("--stop-at", type=int, help="stop after this step (the schedule still targets train.steps)")
    args = parser.parse_args(argv)
    rank_label = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank_label} %(levelname)s %(message)s")
    import torch.distributed as dist

    from segcore.training import fit

    cfg = Config.from_dict(json.loads(Path(args.config).read_text()))
    rank, world, local_rank, backend = _init_process_group()
    if backend == "nccl":
        cfg = cfg.replace(**{"train.device": f"cuda:{local_rank}"})
    try:
        source, on_step = _debug_hooks(cfg, rank, world)
        result = fit(cfg, args.run_dir, source=source, logger=load_logger(args.logger, args.logger_arg),
                     resume=args.resume, stop_at=args.stop_at, rank=rank, world_size=world, progress=rank == 0,
                     on_step=on_step)
        if rank == 0:
            write_result(Path(args.run_dir), result, world)
            log.info("finished: %s (step %d)", result.checkpoint, result.step)
        # Leave together: a rank tearing the group down while rank 0 still writes can abort the peer.
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(worker_main())
