"""``segcore predict IN.tif OUT.tif [--k K] [--export DIR]``: tiled prediction with the numpy runtime."""

from __future__ import annotations

import argparse

HELP = "segment a raster of any size tile by tile with an export (numpy only); uint8 labels, 0 = nodata"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN", help="input raster (RGB, any size)")
    parser.add_argument("output", metavar="OUT", help="output label GeoTIFF (written atomically)")
    parser.add_argument("--export", metavar="DIR", default="export", help="export directory (default ./export)")
    parser.add_argument("--k", type=int, help="clusters (default: the export's max_k)")
    parser.add_argument("--source-gsd", type=float, metavar="M",
                        help="metres per pixel of an input without a CRS (data.source_gsd; default: the export's)")
    parser.add_argument("--config", metavar="FILE",
                        help="YAML/JSON config file (predict.* and data.* are used; defaults: the export's config)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="config overrides right after OUT, e.g. predict.tile=2048")


def run(args: argparse.Namespace) -> int:
    from segcore.config import load_config
    from segcore.predict import export_config, predict_raster
    from segcore.runtime import load_export

    model = load_export(args.export)
    flags = {"data.source_gsd": args.source_gsd} if args.source_gsd is not None else {}
    cfg = load_config(args.config, flags, args.overrides, base=export_config(model.meta))
    p = cfg.predict
    res = predict_raster(args.input, args.output, model, args.k, tile=p.tile, halo=p.halo,
                         sample_pixels=p.sample_pixels, data_cfg=cfg.data, progress=not args.no_progress,
                         region_m=p.region_m, region_compactness=p.region_compactness)
    print(f"wrote {res.path}: {res.width}x{res.height} px, k={res.k}, {res.tiles} tiles of {res.tile} px, "
          f"halo {res.halo} px, working grid {res.working}")
    return 0
