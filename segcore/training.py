"""The distillation training loop: a plain function with its side effects injected.

:func:`fit` trains the student (plus the training-only decoder and loss state) for
``train.steps`` optimizer steps and returns a :class:`FitResult`. It logs through the logger it is
given (a :class:`~segcore.train_logging.NullLogger` by default; MLflow's lives in ``tasks/``),
writes ``config.json``, ``versions.json``, ``metrics.jsonl`` and ``checkpoints/last.pt`` in the run
directory, and resumes exactly from a checkpoint: on the CPU, a run interrupted and resumed ends
with the same weights as one that was not.

The command lines (``segcore train``, ``python -m segcore.train``, ``python -m segcore.train_distill``)
live in :mod:`segcore.cli.train` and import this module; this module imports none of them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segcore.augment import augment_batch
from segcore.checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from segcore.config import Config
from segcore.data.batches import PatchBatcher, TileSource
from segcore.data.sources import build_tile_source
from segcore.device import Placement, plan_placement
from segcore.errors import TrainingError
from segcore.losses import build_loss
from segcore.models import build_decoder, build_segmenter
from segcore.train_logging import JsonlMetrics, NullLogger, TrainLogger
from segcore.versions import package_versions

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What a training run produced."""

    run_dir: Path
    checkpoint: Path
    step: int
    best_loss: float
    best_step: int
    last_terms: dict[str, float] = field(default_factory=dict)
    images_per_s: float = 0.0


class TwoViewNet(nn.Module):
    """Everything that learns, run as one module so one forward precedes one backward (DDP-friendly).

    ``forward`` segments view A (fitting prototypes on it), assigns view B to those prototypes,
    reconstructs view A from its embeddings, and returns the loss terms.
    """

    def __init__(self, model: nn.Module, decoder: nn.Module | None, loss: nn.Module):
        super().__init__()
        self.model, self.decoder, self.loss = model, decoder, loss

    def forward(self, view_a: dict[str, Any], view_b: dict[str, Any], teacher_feats: torch.Tensor | None,
                generator: torch.Generator) -> dict[str, torch.Tensor]:
        out_a = self.model(view_a["image"], valid=view_a["valid"])
        out_b = self.model(view_b["image"], prototypes=out_a["prototypes"], valid=view_b["valid"])
        recon = self.decoder(out_a["embed"]) if self.decoder is not None else None
        return self.loss(out_a, out_b, view_a, view_b, teacher_feats=teacher_feats, recon=recon, generator=generator)


@dataclass
class Trainee:
    """The learning module (possibly DDP-wrapped) and its optimisation state."""

    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None

    @property
    def core(self) -> TwoViewNet:
        return _unwrap(self.net)

    def state(self) -> dict[str, Any]:
        core = self.core
        return {
            "model": core.model.state_dict(),
            "decoder": core.decoder.state_dict() if core.decoder is not None else None,
            "loss": core.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load(self, state: dict[str, Any]) -> None:
        core = self.core
        core.model.load_state_dict(state["model"])
        if core.decoder is not None and state.get("decoder") is not None:
            core.decoder.load_state_dict(state["decoder"])
        core.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def lr_lambda(cfg: Config):
    """Linear warm-up, then cosine decay to 10% of ``train.lr``."""
    warm, total = max(cfg.train.warmup_steps, 0), max(cfg.train.steps, 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min((step - warm) / max(total - warm, 1), 1.0)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_trainee(cfg: Config, placement: Placement) -> Trainee:
    """Model, decoder, loss state and optimizer, initialised from ``train.seed``."""
    torch.manual_seed(cfg.train.seed)
    model = build_segmenter(cfg)
    decoder = build_decoder(cfg) if cfg.autoencoder.enabled else None
    net = TwoViewNet(model, decoder, build_loss(cfg)).to(placement.student)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    scaler = torch.amp.GradScaler(placement.student.type) if placement.use_scaler else None
    return Trainee(net, optimizer, scheduler, scaler)


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _autocast(placement: Placement):
    if placement.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(placement.autocast_device, dtype=placement.amp_dtype)


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The augmentation generator of one step on one rank: depends on nothing else."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))


def train_step(trainee: Trainee, teacher, batch: dict[str, Any], step: int, cfg: Config,
               placement: Placement, rank: int = 0) -> dict[str, torch.Tensor]:
    """One optimizer step on one batch; returns the detached loss terms (``total`` included)."""
    gen = step_generator(cfg.aug.seed, step, rank)
    view_a, view_b = augment_batch(batch, gen, cfg.aug)
    view_a, view_b = _to(view_a, placement.student), _to(view_b, placement.student)
    trainee.net.train()
    with _autocast(placement):
        teacher_feats = None
        if teacher is not None:
            with torch.no_grad():
                teacher_feats = teacher(view_a["image"].to(placement.teacher)).to(placement.student)
        terms = trainee.net(view_a, view_b, teacher_feats, gen)
    for name, value in terms.items():
        if not torch.isfinite(value).all():
            raise TrainingError(f"non-finite loss at step {step}: term {name!r} = {value.item()}")
    trainee.optimizer.zero_grad(set_to_none=True)
    total = terms["total"]
    if trainee.scaler is not None:
        trainee.scaler.scale(total).backward()
        trainee.scaler.unscale_(trainee.optimizer)
    else:
        total.backward()
    if cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(trainee.net.parameters(), cfg.train.grad_clip)
    if trainee.scaler is not None:
        trainee.scaler.step(trainee.optimizer)
        trainee.scaler.update()
    else:
        trainee.optimizer.step()
    trainee.scheduler.step()
    return {k: v.detach() for k, v in terms.items()}


def warm_start(trainee: Trainee, checkpoint: str | Path, placement: Placement) -> None:
    """Start from the model (and decoder) weights of ``checkpoint``: step 0, fresh optimizer and schedule.

    ``train.init_from`` names it (the pipeline's ``--warm-start champion`` puts the champion's
    checkpoint there). A checkpoint of another architecture is a :class:`TrainingError`.
    """
    state = load_checkpoint(checkpoint, map_location=placement.student)
    core = trainee.core
    try:
        core.model.load_state_dict(state["model"])
        if core.decoder is not None and state.get("decoder") is not None:
            core.decoder.load_state_dict(state["decoder"])
    except RuntimeError as exc:
        raise TrainingError(
            f"{checkpoint}: its weights do not fit this model config ({str(exc).splitlines()[0]}); "
            "train from scratch (no warm start) or use the same model.* / student.* settings"
        ) from exc
    log.info("warm start from %s (step 0)", checkpoint)


def training_threads(requested: int, world_size: int = 1) -> int:
    """Intra-op threads for ``train.threads``: the value itself, or for 0 (auto) ``OMP_NUM_THREADS``
    when set, else the usable cores shared among the ``world_size`` ranks, at least 1.

    A function of the machine, never of its momentary load: the thread count changes the order of
    float sums, so a load-dependent choice would break "the same seed gives the same numbers".
    ``bench/threads.py`` on 2 idle cores: 2 threads ran 1.84x as fast as 1; with one other busy
    process 0.73x as fast (threads wait on each other at every op), so :func:`fit` warns when other
    processes keep cores busy and says to set ``train.threads``.
    """
    if requested > 0:
        return requested
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, usable_cores() // max(1, world_size))


def crowding_warning(threads: int, world_size: int = 1) -> str:
    """A warning when other processes leave fewer free cores than the ranks' threads need ('' if not)."""
    busy = busy_cores_elsewhere(0.1)
    if busy is None:
        return ""
    free = usable_cores() - busy
    if threads * world_size <= free + 0.5:
        return ""
    return (f"other processes keep {busy:.1f} of {usable_cores()} cores busy; training with {threads} thread(s) "
            f"per process oversubscribes the rest and can run several times slower: set train.threads="
            f"{max(1, int(free + 0.5) // max(1, world_size))} (or OMP_NUM_THREADS) on a shared machine")


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def busy_cores_elsewhere(interval: float = 0.25) -> float | None:
    """Cores' worth of CPU that other processes used over ``interval`` seconds (Linux ``/proc``;
    ``None`` where it is not available). This process's own threads are not counted."""
    try:
        first = _cpu_sample()
        time.sleep(interval)
        second = _cpu_sample()
    except (OSError, ValueError, IndexError):
        return None
    return busy_between(first, second, os.cpu_count() or 1)


def _cpu_sample() -> tuple[int, int, int]:
    """``(all ticks, idle + iowait ticks, this process's user + system ticks)`` from ``/proc``."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return sum(fields), fields[3] + fields[4], int(own[11]) + int(own[12])


def busy_between(first: tuple[int, int, int], second: tuple[int, int, int], online: int) -> float | None:
    """Cores kept busy by other processes between two :func:`_cpu_sample` readings (``/proc/stat``
    counts ticks over all ``online`` CPUs; this process's own ticks are taken out)."""
    ticks = second[0] - first[0]
    if ticks <= 0:
        return None
    busy = (ticks - (second[1] - first[1])) - (second[2] - first[2])
    return max(0.0, busy * online / ticks)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", disable=not enabled, dynamic_ncols=True)


def fit(
    cfg: Config,
    run_dir: str | Path,
    *,
    source: TileSource | None = None,
    logger: TrainLogger | None = None,
    resume: str | Path | None = None,
    stop_at: int | None = None,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
    on_step: Callable[[int, Trainee], None] | None = None,
) -> FitResult:
    """Train for ``cfg.train.steps`` steps (or until ``stop_at``) and return what was made.

    Args:
        cfg: the resolved configuration; saved as ``config.json`` in ``run_dir``.
        run_dir: directory for checkpoints, config and metrics (created).
        source: tile source; default :func:`~segcore.data.sources.build_tile_source` from ``cfg.data``.
        logger: receives params once and metrics every ``train.log_every`` steps (rank 0 only).
        resume: checkpoint to continue from; the batches and weights continue exactly.
        stop_at: stop after this step (simulates an interruption; the schedule still targets
            ``train.steps``).
        rank, world_size: this process's place in a distributed run (only rank 0 writes).
        on_step: called on every rank as ``on_step(done_steps, trainee)`` after each optimizer step
            (debug hooks such as :mod:`segcore.distributed`'s per-rank checksums).
    """
    run_dir = Path(run_dir)
    is_main = rank == 0
    logger = logger if (logger is not None and is_main) else NullLogger()
    placement = plan_placement(cfg.train.device, cfg.train.amp, cfg.teacher.enabled)
    threads = training_threads(cfg.train.threads, world_size)
    torch.set_num_threads(threads)
    if is_main:
        log.info("training with %d intra-op thread(s) per process (train.threads=%d)", threads, cfg.train.threads)
        if cfg.train.threads == 0 and (crowded := crowding_warning(threads, world_size)):
            log.warning(crowded)
    trainee = build_trainee(cfg, placement)
    teacher = None
    if cfg.teacher.enabled:
        from segcore.teachers import build_teacher

        teacher = build_teacher(cfg).to(placement.teacher)
    if world_size > 1:
        ids = [placement.student.index] if placement.student.type == "cuda" else None
        trainee.net = nn.parallel.DistributedDataParallel(trainee.net, device_ids=ids)
    source = source if source is not None else build_tile_source(cfg, rank=rank, world_size=world_size)
    batcher = PatchBatcher(source, cfg.data.patch_sizes, cfg.train.batch_size, cfg.train.seed,
                           cfg.train.multi_scale_mode)
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    metrics_file = JsonlMetrics(run_dir / "metrics.jsonl")
    start, best_loss, best_step = 0, math.inf, -1
    if is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / "config.json", cfg.to_dict())
        # The thread count is part of what made the numbers (it orders the float sums).
        _write_json(run_dir / "versions.json", {**package_versions(), "torch_threads": threads})
        logger.log_params({"config_hash": cfg.hash(), **_flat_params(cfg)})
    if cfg.train.init_from and resume is None:
        warm_start(trainee, cfg.train.init_from, placement)
    if resume is not None:
        state = load_checkpoint(resume, map_location=placement.student)
        trainee.load(state)
        restore_rng(state["rng"])
        start, best_loss, best_step = state["step"], state["best_loss"], state["best_step"]
        batcher.skip_tiles(state["consumed"])
        if is_main:
            metrics_file.truncate_after(start)
        log.info("resumed from %s at step %d", resume, start)
    end = cfg.train.steps if stop_at is None else min(stop_at, cfg.train.steps)
    terms: dict[str, torch.Tensor] = {}
    images, t0 = 0, time.perf_counter()
    bar = _progress(end, start, progress and is_main)

    def checkpoint(step: int) -> None:
        if is_main:
            save_checkpoint(ckpt_path, {
                **trainee.state(), "step": step, "consumed": batcher.consumed, "rng": rng_state(),
                "best_loss": best_loss, "best_step": best_step, "config": cfg.to_dict(),
                "versions": {**package_versions(), "torch_threads": torch.get_num_threads()},
            })

    for step in range(start, end):
        batch = batcher.batch(step)
        terms = train_step(trainee, teacher, batch, step, cfg, placement, rank)
        images += batch["image"].shape[0]
        if on_step is not None:
            on_step(step + 1, trainee)
        total = float(terms["total"])
        if total < best_loss:
            best_loss, best_step = total, step + 1
        done = step + 1
        if is_main and (done % max(cfg.train.log_every, 1) == 0 or done == end):
            flat = {f"train/{k}": float(v) for k, v in terms.items()}
            flat["train/lr"] = trainee.scheduler.get_last_lr()[0]
            flat["train/patch"] = float(batch["image"].shape[-1])
            metrics_file.write(flat, done)
            logger.log_metrics(flat, done)
        bar.set_postfix(loss=f"{total:.4f}", ips=f"{images / (time.perf_counter() - t0):.1f}")
        bar.update(1)
        if cfg.train.checkpoint_every > 0 and done % cfg.train.checkpoint_every == 0 and done != end:
            checkpoint(done)
    bar.close()
    checkpoint(end)
    elapsed = max(time.perf_counter() - t0, 1e-9)
    return FitResult(run_dir, ckpt_path, end, best_loss, best_step,
                     {k: float(v) for k, v in terms.items()}, images / elapsed)


def _flat_params(cfg: Config) -> dict[str, Any]:
    return {f"{sec}.{key}": value for sec, values in cfg.to_dict().items() for key, value in values.items()}
