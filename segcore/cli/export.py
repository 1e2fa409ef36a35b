"""``segcore export --checkpoint CKPT --out DIR``: write ``model.npz``, ``meta.json``, ``metrics.json``."""

from __future__ import annotations

import argparse
import json

from segcore.checks import seed_arg

HELP = "export a checkpoint's inference path for the numpy runtime (model.npz, meta.json, metrics.json)"


def _codebook_k(text: str) -> int:
    """``--codebook-k``: classes 1..255 (labels are uint8, 0 is nodata)."""
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= k <= 255:
        raise argparse.ArgumentTypeError(f"{k} is out of range: a codebook has 1..255 classes")
    return k


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="CKPT", required=True, help="training checkpoint (.pt)")
    parser.add_argument("--out", metavar="DIR", required=True,
                        help="export directory: new, empty, or an earlier export (replaced atomically)")
    parser.add_argument("--run-id", metavar="ID", help="source run id recorded in meta.json (e.g. the MLflow run)")
    parser.add_argument("--metrics", metavar="JSON", help="evaluation metrics.json to copy into the export")
    parser.add_argument("--codebook-k", type=_codebook_k, default=None, metavar="K",
                        help="classes of the dataset codebook fitted at export (default: one per --class-names "
                             "name, else 8; see docs/export-format.md)")
    parser.add_argument("--codebook-data", metavar="SRC", default="auto",
                        help="what the codebook is fitted on: auto (the training shards, else the config's rasters, "
                             "else synthetic scenes), shards, synthetic, or rasters (file, directory, glob, CSV)")
    parser.add_argument("--codebook-seed", type=seed_arg, default=0, metavar="N",
                        help="seed of the codebook fit, 0..2**32-1")
    parser.add_argument("--codebook-merge-from", type=_codebook_k, default=0, metavar="N",
                        help="fit N prototypes (more than K) and group them into the K classes by how often they sit "
                             "side by side (label-free; helps land-cover imagery at metres per pixel, not object-level "
                             "drone imagery: docs/qgis.md); --class-names then names the K classes")
    parser.add_argument("--no-codebook", action="store_true", help="no codebook: predictions fit per raster only")
    parser.add_argument("--class-names", metavar="FILE",
                        help="names of the codebook classes: one per line, a JSON list, or a CSV with a name column; "
                             "a repeated name makes the ids named alike one class")
    parser.add_argument("--onnx", action="store_true",
                        help="also write model.onnx for QGIS plugins (needs pip install 'segcore[onnx]')")


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
    codebook = None if args.no_codebook else codebook_request(args)
    if args.onnx:
        from segcore.onnx_export import require_onnx

        require_onnx()
    out = export_checkpoint(args.checkpoint, args.out, run_id=args.run_id, eval_metrics=metrics,
                            codebook=codebook, onnx=args.onnx)
    meta = json.loads((Path(out) / "meta.json").read_text())
    extras = []
    if codebook:
        legend = list(dict.fromkeys(meta["class_names"]))  # ids named alike are one class
        grouped = f" in {len(legend)} classes" if len(legend) < meta["codebook"]["k"] else ""
        extras.append(f"codebook k={meta['codebook']['k']}{grouped} ({', '.join(legend)})")
    extras += ["model.onnx"] if args.onnx else []
    print(f"exported {args.checkpoint} to {out}" + (f": {'; '.join(extras)}" if extras else ""))
    return 0


def codebook_request(args: argparse.Namespace):
    """The :class:`~segcore.codebook.CodebookRequest` of the ``--codebook-*`` and ``--class-names`` flags."""
    from segcore.codebook import CodebookRequest, read_class_names

    names = tuple(read_class_names(args.class_names)) if args.class_names else ()
    return CodebookRequest(k=args.codebook_k or 0, seed=args.codebook_seed, source=args.codebook_data,
                           class_names=names, merge_from=args.codebook_merge_from)
