"""Training checkpoints: everything needed to resume exactly, written atomically.

A checkpoint is a ``torch.save`` dict of tensors and plain containers only, so it loads with
``torch.load(..., weights_only=True)``:

``model``, ``decoder`` (or None), ``loss`` (state of the composite loss: EMA normalisers,
feature projection), ``optimizer``, ``scheduler``, ``scaler`` (or None), ``step``, ``consumed``
(tiles taken from the data stream), ``rng`` (torch CPU/CUDA generator states), ``best_loss``,
``best_step``, ``config`` (resolved config dict), ``versions``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from segcore.errors import ArtifactError

FORMAT = "segcore-checkpoint/1"


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` through a temporary file in the same directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save({"format": FORMAT, **state}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check its format."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"checkpoint {path} does not exist; pass the .pt file a training run wrote")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ArtifactError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); "
                            "it may be truncated or not a segcore checkpoint") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ArtifactError(f"checkpoint {path} has format {found!r}, expected {FORMAT!r}")
    return state


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
