"""``segcore synth``: write procedural aerial scenes with labels as GeoTIFFs plus a manifest."""

from __future__ import annotations

import argparse
import logging

from segcore.checks import positive_int_arg, seed_arg
from segcore.config import DataConfig
from segcore.errors import ConfigError

HELP = "write synthetic aerial scenes (RGB + label GeoTIFFs, manifest.csv, classes.csv)"

logger = logging.getLogger(__name__)


def _size(text: str) -> int | tuple[int, int]:
    """``"512"`` -> 512; ``"384x640"`` -> (384, 640) as (height, width)."""
    try:
        if "x" in text.lower():
            h, w = text.lower().split("x", 1)
            size: int | tuple[int, int] = (int(h), int(w))
        else:
            size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} must be N or HxW in pixels, e.g. 512 or 384x640") from None
    if min(size if isinstance(size, tuple) else (size,)) < 16:
        raise argparse.ArgumentTypeError(f"size {text!r} is too small: scenes are at least 16 px on each side")
    return size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DataConfig()
    parser.add_argument("out_dir", metavar="OUT_DIR",
                        help="directory to write images/, labels/ and the CSVs into: new, empty, or an earlier "
                             "synthetic dataset (replaced as a whole)")
    parser.add_argument("--count", type=positive_int_arg, default=defaults.synthetic_count, help="number of scenes")
    parser.add_argument("--size", type=_size, default=defaults.synthetic_size, help="scene side in px, or HxW")
    parser.add_argument("--seed", type=seed_arg, default=0,
                        help="dataset seed, 0..2**32-1 (scene i uses a seed derived from it)")
    parser.add_argument("--nodata-border", type=int, default=0, help="width in px of a nodata frame round each scene")
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction, help="share of scenes in val")


def run(args: argparse.Namespace) -> int:
    from segcore.data.synthetic import write_synthetic_dataset
    from segcore.safety import replacing_dir

    if not 0.0 <= args.val_fraction < 1.0:
        raise ConfigError(f"--val-fraction={args.val_fraction} must be within 0..1 (exclusive of 1)")
    side = min(args.size) if isinstance(args.size, tuple) else args.size
    if not 0 <= args.nodata_border < side // 2:
        raise ConfigError(f"--nodata-border={args.nodata_border} must be within 0..{side // 2 - 1} px for "
                          f"--size {args.size}")
    with replacing_dir(args.out_dir, "synth", what="OUT_DIR") as tmp:  # all scenes appear at once, or none
        write_synthetic_dataset(
            tmp, args.count, args.size, args.seed, nodata_border=args.nodata_border, val_fraction=args.val_fraction
        )
    out = args.out_dir
    logger.info(
        "wrote %d synthetic scenes of %s px (seed %d) to %s: images/, labels/, manifest.csv, classes.csv",
        args.count,
        args.size,
        args.seed,
        out,
    )
    return 0
