"""``python -m segcore.train_distill``: the distillation training command line.

The same flags as ``segcore train`` (see ``--help`` and :mod:`segcore.cli.train`);
``python -m segcore.train`` forwards here.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from segcore.cli import train as train_cli
    from segcore.cli.main import run_standalone

    return run_standalone(train_cli, "python -m segcore.train_distill", argv)


if __name__ == "__main__":
    raise SystemExit(main())
