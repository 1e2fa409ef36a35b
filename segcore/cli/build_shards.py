"""``segcore build-shards``: tile rasters into GeoTIFF shards with SLIC, index tables and a manifest.

Config precedence: defaults, ``--config FILE``, the flags below, then trailing ``section.key=value``
overrides. Example::

    segcore build-shards --raster imagery/ --dataset city --tile-size 512 --num-workers 2 data.min_valid=0.6
"""

from __future__ import annotations

import argparse

HELP = "tile rasters into GeoTIFF shards (rgb, SLIC, labels) with per-shard indexes and a manifest"

# flag -> (dotted key, type, help)
FLAGS = {
    "--raster": ("data.raster_paths", str, "raster file, directory or glob (repeatable)"),
    "--manifest": ("data.manifest", str, "CSV with columns image[,label][,split]; wins over --raster"),
    "--processed-root": ("data.processed_root", str, "root directory of the shard datasets"),
    "--dataset": ("data.dataset", str, "dataset name (one path component)"),
    "--gsd": ("data.gsd", float, "working ground resolution in metres per pixel (0: each raster's own)"),
    "--source-gsd": ("data.source_gsd", float, "metres per pixel of rasters without a CRS"),
    "--tile-size": ("data.tile_size", int, "tile side in pixels"),
    "--tile-overlap": ("data.tile_overlap", int, "overlap of neighbouring tiles in pixels"),
    "--tiles-per-shard": ("data.tiles_per_shard", int, "tiles per shard directory"),
    "--min-valid": ("data.min_valid", float, "skip tiles with a smaller valid fraction"),
    "--bands": ("data.bands", str, "three 1-based band indexes read as RGB, e.g. 4,3,2"),
    "--nodata": ("data.nodata", float, "nodata value for rasters that declare none"),
    "--slic-region-size": ("data.slic_region_size", int, "approximate superpixel side in pixels"),
    "--slic-compactness": ("data.slic_compactness", float, "SLIC compactness"),
    "--split-policy": ("data.split_policy", str, "raster | block"),
    "--val-fraction": ("data.val_fraction", float, "share of rasters (or blocks) in val"),
    "--num-workers": ("data.num_workers", int, "worker processes (0: in-process)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML/JSON config file")
    for flag, (key, kind, text) in FLAGS.items():
        action = "append" if flag == "--raster" else "store"
        parser.add_argument(flag, type=kind, action=action, default=None, help=f"{text} ({key})")
    parser.add_argument(
        "--on-error",
        choices=("fail", "skip"),
        default="fail",
        help="fail: stop before publishing anything; skip: build the rest and list the failures",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides, applied last")


def flags_to_keys(args: argparse.Namespace) -> dict[str, object]:
    """The dotted config keys set by explicit flags."""
    out: dict[str, object] = {}
    for flag, (key, _, _) in FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            out[key] = tuple(value) if flag == "--raster" else value
    return out


def run(args: argparse.Namespace) -> int:
    from segcore.config import load_config
    from segcore.data.shards import build_shards

    cfg = load_config(args.config, flags_to_keys(args), args.overrides)
    summary = build_shards(cfg, on_error=args.on_error, progress=not args.no_progress)
    print(summary.table())
    return 0
