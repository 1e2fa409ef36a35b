"""``segcore eval``: see :mod:`segcore.eval`."""

from __future__ import annotations

import argparse

HELP = "evaluate a checkpoint, an export or the k-means baseline (Hungarian mIoU, proxies, overlays)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from segcore.eval import add_arguments as add

    add(parser)


def run(args: argparse.Namespace) -> int:
    from segcore.eval import run as run_eval

    return run_eval(args)
