"""Entry point of the ``segcore`` console script.

Each subcommand lives in its own module under :mod:`segcore.cli` and exposes
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Heavy imports (torch,
rasterio) happen inside ``run`` so ``segcore --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from segcore import __version__
from segcore.errors import SegcoreError

SUBCOMMANDS = {
    "train": "segcore.cli.train",
    "synth": "segcore.cli.synth",
    "build-shards": "segcore.cli.build_shards",
    "eval": "segcore.cli.eval",
    "export": "segcore.cli.export",
    "predict": "segcore.cli.predict",
    "config": "segcore.cli.config",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segcore", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"segcore {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _execute(run, args: argparse.Namespace, name: str, verbose: bool = False) -> int:
    """Run a parsed command with logging set up; a :class:`SegcoreError` becomes exit code 2."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(run(args) or 0)
    except SegcoreError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2


def run_standalone(module, prog: str, argv: list[str] | None = None) -> int:
    """One subcommand module as its own program (``python -m segcore.eval``, ``segcore.train``)."""
    parser = argparse.ArgumentParser(prog=prog, description=module.HELP)
    module.add_arguments(parser)
    return _execute(module.run, parser.parse_args(argv), prog)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _execute(args._run, args, f"segcore {args.command}", args.verbose)


if __name__ == "__main__":
    sys.exit(main())
