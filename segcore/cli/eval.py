"""``segcore eval`` (also ``python -m segcore.eval``): score a model, an export or the k-means baseline.

Model (exactly one): ``--checkpoint CKPT`` (a training checkpoint, run with torch: the network's
own per-image clusters), ``--export DIR`` (scored the way ``segcore predict`` runs it: the numpy
runtime with the export's codebook, class prior and region vote, rasters read on the export's
working grid and segmented whole, the map then scored on every s-th pixel as ``eval.max_side``
says, and for codebook ids one matching of ids to classes for the whole set too) or
``--baseline kmeans|constant`` (k-means on RGB, the README's baseline; one label per image, the
floor of per-image matching). Without any of them the command
fails: it never trains on its own.

Data (exactly one): ``--synthetic --seed S`` (``eval.synthetic_count`` generated scenes; scene
``i`` uses seed ``scene_seed(S, i)``, disjoint from training scenes, which use
``scene_seed(7000003 + train.seed, i)``), ``--data PATH`` (a manifest CSV with ``image,label``
columns or a directory with ``images/`` and ``labels/``) or ``--shards ROOT --split NAME``.

Writes ``metrics.json``, ``per_image.csv``, ``summary.md`` and ``overlays/`` into ``--out`` and
prints the summary table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from segcore.checks import seed_arg
from segcore.config import Config, load_config
from segcore.errors import ArtifactError, ConfigError

HELP = "evaluate a checkpoint, an export or the k-means baseline (Hungarian mIoU, proxies, overlays)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    model = p.add_argument_group("model (exactly one)")
    model.add_argument("--checkpoint", metavar="CKPT", help="training checkpoint (.pt)")
    model.add_argument("--export", metavar="DIR", help="export directory (model.npz, meta.json, metrics.json)")
    model.add_argument("--baseline", choices=("kmeans", "constant"),
                       help="evaluate a baseline instead: k-means on RGB, or one label per image")
    data = p.add_argument_group("data (exactly one)")
    data.add_argument("--synthetic", action="store_true", help="generated scenes with labels")
    data.add_argument("--seed", type=seed_arg, default=7,
                      help="evaluation seed for --synthetic, 0..2**32-1 (default 7)")
    data.add_argument("--data", metavar="PATH", help="manifest CSV or directory with images/ and labels/")
    data.add_argument("--shards", metavar="ROOT", help="built shard dataset directory (<processed_root>/<dataset>)")
    data.add_argument("--split", default="val", help="split of --shards (default val)")
    p.add_argument("--out", metavar="DIR", required=True,
                   help="directory for the report files: new, empty, or an earlier report (replaced as a whole)")
    p.add_argument("--config", metavar="FILE", help="YAML/JSON config file (eval.* and model.max_k are used)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides, e.g. eval.k=6")


def build_data(args: argparse.Namespace, cfg: Config):
    """The :class:`~segcore.evaluate.EvalData` named by the data flags."""
    from segcore.evaluate import raster_data, shard_data, synthetic_data

    chosen = [flag for flag in ("synthetic", "data", "shards") if getattr(args, flag)]
    if len(chosen) != 1:
        raise ConfigError("choose exactly one data source: --synthetic [--seed S], --data PATH or --shards ROOT")
    ev = cfg.eval
    full = bool(args.export)  # an export segments the whole working grid, as segcore predict does
    if args.synthetic:
        return synthetic_data(args.seed, ev.synthetic_count, ev.synthetic_size, ev.max_side, keep_full=full)
    if args.data:
        return raster_data(args.data, ev.max_side, ev.num_classes, cfg.data, keep_full=full)
    return shard_data(args.shards, args.split, cfg, ev.num_classes)


def model_arg(args: argparse.Namespace) -> str:
    chosen = [v for v in (args.checkpoint, args.export, args.baseline) if v]
    if len(chosen) != 1:
        raise ConfigError("choose exactly one model: --checkpoint CKPT, --export DIR or --baseline kmeans "
                          "(segcore eval does not train; run `segcore train` first)")
    if args.export and not Path(args.export, "meta.json").is_file():
        raise ArtifactError(f"--export {args.export}: not an export directory (model.npz, meta.json, metrics.json); "
                            "run `segcore export --checkpoint CKPT --out DIR` first")
    return chosen[0]


def run(args: argparse.Namespace) -> int:
    from segcore.evaluate import ExportPredictor, evaluate, summary_markdown
    from segcore.safety import replacing_dir

    model = model_arg(args)
    base = None
    if args.export:  # as segcore predict runs it: the export's config (working grid, vote, prior), then overrides
        from segcore.predict import export_config
        from segcore.runtime import read_meta

        base = export_config(read_meta(args.export))
    cfg = load_config(args.config, overrides=args.overrides, base=base)
    predictor = ExportPredictor(args.export, cfg) if args.export else model
    inputs = [args.checkpoint, args.export, args.data, args.shards, args.config]
    with replacing_dir(args.out, "eval", inputs=inputs, what="--out") as tmp:  # the report appears whole
        data = build_data(args, cfg)
        metrics = evaluate(predictor, data, cfg, tmp)
    method = {"kmeans": "kmeans-rgb", "constant": "one-label-per-image"}.get(model, model)
    print(summary_markdown(metrics, data.name, method))
    print(f"wrote metrics.json, per_image.csv, summary.md and overlays/ to {args.out}")
    return 0
