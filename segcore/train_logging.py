"""Loggers injected into :func:`segcore.training.fit`; the library never talks to MLflow itself.

A logger has ``log_params(dict)``, ``log_metrics(dict, step)`` and ``log_artifact(path)``.
``tasks/`` passes an MLflow-backed one; the default does nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol


class TrainLogger(Protocol):
    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_artifact(self, path: str | Path) -> None: ...


class NullLogger:
    """Logs nothing."""

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: str | Path) -> None:
        pass


class JsonlMetrics:
    """Appends one JSON line per logged step to ``path`` (the run directory's metrics.jsonl)."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, metrics: dict[str, float], step: int) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps({"step": step, **metrics}, sort_keys=True) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop lines past ``step`` (a resumed run rewrites them)."""
        if not self.path.exists():
            return
        keep = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        self.path.write_text("".join(ln + "\n" for ln in keep))
