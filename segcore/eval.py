"""``python -m segcore.eval``: the same command as ``segcore eval`` (see :mod:`segcore.cli.eval`)."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from segcore.cli import eval as eval_cli
    from segcore.cli.main import run_standalone

    return run_standalone(eval_cli, "python -m segcore.eval", argv)


if __name__ == "__main__":
    raise SystemExit(main())
