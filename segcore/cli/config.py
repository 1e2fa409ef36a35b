"""``segcore config``: print the resolved config, or the reference table of every key."""

from __future__ import annotations

import argparse

from segcore.config import describe, load_config

HELP = "show the resolved configuration (or --table: every key, default and meaning)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML or JSON config file")
    p.add_argument("--table", action="store_true", help="markdown reference table of every key")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")


def reference_table() -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{key}` | `{default}` | {meaning} |" for key, default, meaning in describe()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.table:
        print(reference_table())
        return 0
    print(load_config(args.config, overrides=args.overrides).to_json())
    return 0
