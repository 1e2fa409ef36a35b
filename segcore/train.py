"""``python -m segcore.train``: the training command line (the same as ``segcore train``).

A thin entry point. The training loop lives in :mod:`segcore.training` (``fit``, ``FitResult``,
re-exported here for callers of the library API); the command line in :mod:`segcore.cli.train`.
Neither of those imports this module, so the entry points form no import cycle.
"""

from __future__ import annotations

from segcore.training import FitResult, fit

__all__ = ["FitResult", "fit", "main"]


def main(argv: list[str] | None = None) -> int:
    from segcore.cli import train as train_cli
    from segcore.cli.main import run_standalone

    return run_standalone(train_cli, "python -m segcore.train", argv)


if __name__ == "__main__":
    raise SystemExit(main())
