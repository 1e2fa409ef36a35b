"""Entry point of the ``segcore`` console script.

Each subcommand lives in its own module under :mod:`segcore.cli` and exposes
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Heavy imports (torch,
rasterio) happen inside ``run`` so ``segcore --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from segcore import __version__
from segcore.errors import SegcoreError, Terminated

SUBCOMMANDS = {
    "train": "segcore.cli.train",
    "synth": "segcore.cli.synth",
    "build-shards": "segcore.cli.build_shards",
    "eval": "segcore.cli.eval",
    "export": "segcore.cli.export",
    "predict": "segcore.cli.predict",
    "config": "segcore.cli.config",
}


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``PROG: error: argument --k: ...``), exit code 2."""

    def error(self, message: str):
        if message.startswith("unrecognized arguments") and any("=" in w and "." in w for w in message.split()):
            message += "; config overrides (section.key=value) go right after the positional arguments"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="segcore", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"segcore {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=OneLineParser)
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _execute(run, args: argparse.Namespace, name: str, verbose: bool = False) -> int:
    """Run a parsed command with logging set up; every failure is one line on stderr, never a traceback.

    Exit codes: 2 for bad input (a :class:`SegcoreError`, or an OS error naming a file), 128 + N
    when stopped by signal N (SIGTERM and SIGINT run the writers' cleanups first), 1 for anything
    else (a bug: ``-v`` shows the traceback).
    """
    from segcore.safety import terminate_raises

    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print escaped, never crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        with terminate_raises((signal.SIGTERM, signal.SIGINT)):
            return int(run(args) or 0)
    except SegcoreError as exc:
        print(f"{name}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Terminated as exc:
        print(f"{name}: stopped by signal {exc.signum}; temporary files removed", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"{name}: interrupted; temporary files removed", file=sys.stderr)
        return 128 + signal.SIGINT
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{name}: error: {where}{_one_line(exc.strerror or exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        print(f"{name}: internal error: {type(exc).__name__}: {_one_line(exc)} "
              f"(a bug; run with -v for the traceback)", file=sys.stderr)
        return 1


def run_standalone(module, prog: str, argv: list[str] | None = None) -> int:
    """One subcommand module as its own program (``python -m segcore.eval``, ``segcore.train``)."""
    parser = OneLineParser(prog=prog, description=module.HELP)
    module.add_arguments(parser)
    return _execute(module.run, parser.parse_args(argv), prog)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _execute(args._run, args, f"segcore {args.command}", args.verbose)


if __name__ == "__main__":
    sys.exit(main())
