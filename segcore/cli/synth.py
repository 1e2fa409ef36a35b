"""``segcore synth``: write procedural aerial scenes with labels as GeoTIFFs plus a manifest."""

from __future__ import annotations

import argparse
import logging

from segcore.config import DataConfig
from segcore.errors import ConfigError

HELP = "write synthetic aerial scenes (RGB + label GeoTIFFs, manifest.csv, classes.csv)"

logger = logging.getLogger(__name__)


def _size(text: str) -> int | tuple[int, int]:
    """``"512"`` -> 512; ``"384x640"`` -> (384, 640) as (height, width)."""
    try:
        if "x" in text.lower():
            h, w = text.lower().split("x", 1)
            return int(h), int(w)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} must be N or HxW in pixels, e.g. 512 or 384x640") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DataConfig()
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write images/, labels/ and the CSVs into")
    parser.add_argument("--count", type=int, default=defaults.synthetic_count, help="number of scenes")
    parser.add_argument("--size", type=_size, default=defaults.synthetic_size, help="scene side in px, or HxW")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (scene i uses a seed derived from it)")
    parser.add_argument("--nodata-border", type=int, default=0, help="width in px of a nodata frame round each scene")
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction, help="share of scenes in val")


def run(args: argparse.Namespace) -> int:
    from segcore.data.synthetic import write_synthetic_dataset

    if not 0.0 <= args.val_fraction < 1.0:
        raise ConfigError(f"--val-fraction={args.val_fraction} must be within 0..1 (exclusive of 1)")
    out = write_synthetic_dataset(
        args.out_dir, args.count, args.size, args.seed, nodata_border=args.nodata_border, val_fraction=args.val_fraction
    )
    logger.info(
        "wrote %d synthetic scenes of %s px (seed %d) to %s: images/, labels/, manifest.csv, classes.csv",
        args.count,
        args.size,
        args.seed,
        out,
    )
    return 0
