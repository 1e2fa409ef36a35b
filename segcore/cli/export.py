"""``segcore export --checkpoint CKPT --out DIR``: write ``model.npz``, ``meta.json``, ``metrics.json``."""

from __future__ import annotations

import argparse
import json

HELP = "export a checkpoint's inference path for the numpy runtime (model.npz, meta.json, metrics.json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="CKPT", required=True, help="training checkpoint (.pt)")
    parser.add_argument("--out", metavar="DIR", required=True,
                        help="export directory: new, empty, or an earlier export (replaced atomically)")
    parser.add_argument("--run-id", metavar="ID", help="source run id recorded in meta.json (e.g. the MLflow run)")
    parser.add_argument("--metrics", metavar="JSON", help="evaluation metrics.json to copy into the export")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from segcore.errors import ArtifactError
    from segcore.export import export_checkpoint
    from segcore.safety import claim_output_dir

    claim_output_dir(args.out, "export", inputs=[args.checkpoint, args.metrics], what="--out")
    metrics = None
    if args.metrics:
        try:
            metrics = json.loads(Path(args.metrics).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"--metrics {args.metrics}: not a readable JSON file ({exc})") from exc
    out = export_checkpoint(args.checkpoint, args.out, run_id=args.run_id, eval_metrics=metrics)
    print(f"exported {args.checkpoint} to {out}")
    return 0
