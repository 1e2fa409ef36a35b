"""Data-parallel training with ``torchrun`` and DistributedDataParallel.

``train.nproc > 1`` (``segcore train --nproc N``) launches::

    python -m torch.distributed.run --standalone --nproc_per_node N -m segcore.distributed --config C --run-dir D

Each process joins the process group (NCCL on GPUs, one GPU per local rank; gloo on CPUs), builds
its share of the data (the shard loader partitions tiles over ranks x DataLoader workers) and runs
:func:`segcore.train.fit` with its rank. Gradients are averaged by DDP; only rank 0 writes
checkpoints, metrics and logs. Several machines: run the same module with
``torchrun --nnodes M --node_rank R --rdzv_backend c10d --rdzv_endpoint HOST:PORT --nproc_per_node N``
on each (see ``docs/scaling.md``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from segcore.config import Config

log = logging.getLogger(__name__)


def torchrun_command(cfg: Config, run_dir: Path, resume: str | None = None) -> list[str]:
    """The command that trains ``cfg`` on ``cfg.train.nproc`` local processes."""
    config_path = Path(run_dir) / "launch-config.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.train.nproc}",
           "-m", "segcore.distributed", "--config", str(config_path), "--run-dir", str(run_dir)]
    if resume:
        cmd += ["--resume", str(resume)]
    return cmd


def launch_torchrun(cfg: Config, run_dir: str | Path, resume: str | None = None) -> int:
    """Write the resolved config next to the run and start ``torchrun``; returns its exit code."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / ".launch-config.json.tmp"
    tmp.write_text(cfg.to_json())
    os.replace(tmp, run_dir / "launch-config.json")
    cmd = torchrun_command(cfg, run_dir, resume)
    log.info("launching: %s", " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode


def _init_process_group():
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), local_rank, backend


def worker_main(argv: list[str] | None = None) -> int:
    """Entry point of one torchrun process."""
    parser = argparse.ArgumentParser(prog="python -m segcore.distributed")
    parser.add_argument("--config", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--resume")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank%(process)d %(levelname)s %(message)s")
    import torch.distributed as dist

    from segcore.train import fit

    cfg = Config.from_dict(json.loads(Path(args.config).read_text()))
    rank, world, local_rank, backend = _init_process_group()
    if backend == "nccl":
        cfg = cfg.replace(**{"train.device": f"cuda:{local_rank}"})
    try:
        result = fit(cfg, args.run_dir, resume=args.resume, rank=rank, world_size=world, progress=rank == 0)
        if rank == 0:
            log.info("finished: %s (step %d)", result.checkpoint, result.step)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(worker_main())
