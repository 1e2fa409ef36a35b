"""``segcore predict IN OUT [--export DIR] [--classes ...] [--vector OUT.gpkg]``: rasters to map products.

``IN`` is a raster, or many (a directory, a glob, a manifest CSV; ``OUT`` is then a directory that
gets ``<stem>.tif`` per raster and ``mosaic.vrt``). Without ``--export`` the champion is used
(:mod:`segcore.champion`), and the command says which export that is.
"""

from __future__ import annotations

import argparse

HELP = "segment a raster of any size tile by tile with an export (numpy only); uint8 labels, 0 = nodata"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN", help="input raster (RGB, any size), or a directory, glob or CSV of many")
    parser.add_argument("output", metavar="OUT",
                        help="output label GeoTIFF (written atomically); a directory when IN names many rasters")
    parser.add_argument("--export", metavar="DIR",
                        help="export directory (default: the champion: the registry's when MLFLOW_TRACKING_URI "
                             "is a tracking server, else the newest export under --work-dir)")
    parser.add_argument("--work-dir", metavar="DIR", default="segcore-work",
                        help="where to look for exports without --export (default segcore-work)")
    parser.add_argument("--model-name", default="segcore-student", help="registered model of the champion")
    parser.add_argument("--classes", choices=("auto", "codebook", "raster"),
                        help="codebook: the export's dataset classes, same ids in every raster; raster: prototypes "
                             "fitted per raster; auto (default, predict.classes): codebook when the export has one")
    parser.add_argument("--prior-rounds", type=int, metavar="N",
                        help="EM rounds of each raster's class shares, which weight the classes so that undecided "
                             "pixels join the raster's main classes (predict.prior_rounds; 0: off)")
    parser.add_argument("--k", type=int, help="clusters for --classes raster (default: the export's max_k)")
    parser.add_argument("--class-names", metavar="FILE",
                        help="class names: one per line, a JSON list, or a CSV with a name column; with the codebook a "
                             "repeated name makes the ids named alike one class")
    parser.add_argument("--overviews", action="store_true", help="internal overviews in the output GeoTIFFs")
    parser.add_argument("--vector", metavar="OUT.gpkg",
                        help="also write polygons (GeoPackage; a directory when IN names many rasters); "
                             "predict.vector_min_area and predict.vector_simplify apply")
    parser.add_argument("--source-gsd", type=float, metavar="M",
                        help="metres per pixel of an input without a CRS (data.source_gsd; default: the export's)")
    parser.add_argument("--config", metavar="FILE",
                        help="YAML/JSON config file (predict.* and data.* are used; defaults: the export's config)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="config overrides right after OUT, e.g. predict.tile=2048")


def run(args: argparse.Namespace) -> int:
    from segcore.config import load_config
    from segcore.predict import export_config
    from segcore.products import class_plan, expand_inputs, output_paths, predict_to_map
    from segcore.runtime import load_export

    export = args.export
    if export is None:
        from segcore.champion import find_champion

        export, why = find_champion(args.work_dir, args.model_name)
        print(f"using export {export}: {why}")
    model = load_export(export)
    flags = {"data.source_gsd": args.source_gsd} if args.source_gsd is not None else {}
    if args.classes:
        flags["predict.classes"] = args.classes
    if args.prior_rounds is not None:
        flags["predict.prior_rounds"] = args.prior_rounds
    if args.overviews:
        flags["predict.overviews"] = True
    cfg = load_config(args.config, flags, args.overrides, base=export_config(model.meta))
    plan = class_plan(model, export, cfg.predict.classes, args.k, cfg.predict.class_names, args.class_names)
    inputs, many = expand_inputs(args.input)
    outputs = output_paths(inputs, args.output, many)
    res = predict_to_map(inputs, outputs, model, plan, cfg, overviews=cfg.predict.overviews, vector=args.vector,
                         progress=not args.no_progress)
    for r in res.rasters:
        print(f"wrote {r.path}: {r.width}x{r.height} px, {plan.mode} classes k={r.k}, {r.tiles} tiles of {r.tile} "
              f"px, halo {r.halo} px, working grid {r.working}; style {r.path.with_suffix('.qml').name}")
        if r.prior:
            print("  class shares (prior): " + ", ".join(f"{n} {p:.0%}" for n, p in zip(r.class_names, r.prior,
                                                                                      strict=True)))
    if res.mosaic is not None:
        print(f"wrote {res.mosaic}: mosaic of {len(res.rasters)} rasters")
    for v in res.vectors:
        print(f"wrote {v.path}: {v.polygons} polygons (layer {v.layer})")
    return 0
