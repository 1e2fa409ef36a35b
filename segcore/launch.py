"""Run training in this process or, with ``train.nproc > 1``, on ``torchrun`` processes.

:func:`run_training` is what an orchestrator calls: it returns a
:class:`~segcore.training.FitResult` either way. In-process it passes ``logger`` to
:func:`~segcore.training.fit`; under torchrun each rank builds the logger from ``logger_spec``
(``module:factory``) and ``logger_arg`` (:mod:`segcore.distributed`), and only rank 0 logs.
"""

from __future__ import annotations

import json
from pathlib import Path

from segcore.config import Config
from segcore.errors import TrainingError
from segcore.train_logging import TrainLogger
from segcore.training import FitResult, fit


def run_training(cfg: Config, run_dir: str | Path, *, logger: TrainLogger | None = None, logger_spec: str = "",
                 logger_arg: str = "", progress: bool = True, resume: str | Path | None = None) -> FitResult:
    """Train ``cfg`` into ``run_dir`` (one process, or ``cfg.train.nproc`` under torchrun), continuing
    from checkpoint ``resume`` when given."""
    run_dir = Path(run_dir)
    if cfg.train.nproc <= 1:
        return fit(cfg, run_dir, logger=logger, progress=progress, resume=resume)
    from segcore.distributed import launch_torchrun

    code = launch_torchrun(cfg, run_dir, logger=logger_spec, logger_arg=logger_arg, resume=resume)
    if code != 0:
        raise TrainingError(f"torchrun with {cfg.train.nproc} processes exited with {code}; its ranks' "
                            f"output above says why (run directory {run_dir})")
    return read_fit_result(run_dir)


def read_fit_result(run_dir: str | Path) -> FitResult:
    """The :class:`FitResult` rank 0 of a torchrun training wrote to ``run_dir/fit-result.json``.

    ``images_per_s`` counts every rank (``global_images_per_s``).
    """
    run_dir = Path(run_dir)
    path = run_dir / "fit-result.json"
    if not path.is_file():
        raise TrainingError(f"{path}: missing; the torchrun training did not finish (see its output)")
    data = json.loads(path.read_text())
    return FitResult(run_dir, Path(data["checkpoint"]), data["step"], data["best_loss"], data["best_step"],
                     data["last_terms"], data["global_images_per_s"])
