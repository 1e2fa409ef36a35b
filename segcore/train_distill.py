"""``python -m segcore.train_distill``: the distillation training command line.

The same flags as ``segcore train`` (see ``--help``); ``python -m segcore.train`` forwards here.
"""

from __future__ import annotations

import argparse
import logging
import sys

from segcore.cli import train as train_cli
from segcore.errors import SegcoreError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segcore.train_distill", description=train_cli.HELP)
    train_cli.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        return train_cli.run(args)
    except SegcoreError as exc:
        print(f"segcore train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
