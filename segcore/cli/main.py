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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args._run(args) or 0)
    except SegcoreError as exc:
        print(f"segcore {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
