"""Benchmark: numpy runtime versus torch eager (CPU), and tiled ``segcore predict`` on large rasters.

Run: ``python bench/runtime.py [--threads 2] [--tile 1024] [--predict-side 4096] [--rss-sides 2048,10240]``
(``--no-onnx`` / ``--no-predict`` skip the codebook engine table / the large-raster table).
Prints markdown tables (copied into ``docs/benchmarks.md``). Both engines run the same weights (the
default config, random init), on the same ``tile x tile`` image, with the same thread count, in
this process; times are the best of ``--repeat`` runs. Peak RSS of ``predict`` is measured in a
fresh child process per raster (``ru_maxrss``), so the numbers do not include this process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = """
import resource, sys, time
from segcore.predict import predict_raster
from segcore.runtime import load_export
model = load_export(sys.argv[1])
t0 = time.perf_counter()
res = predict_raster(sys.argv[2], sys.argv[3], model, 16, tile=int(sys.argv[4]), progress=False)
dt = time.perf_counter() - t0
print(res.width, res.height, res.tiles, dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def write_big_raster(path: Path, side: int, block: int = 512) -> None:
    """A ``side x side`` RGB GeoTIFF written block by block from a few generated scenes (flipped)."""
    import numpy as np
    import rasterio
    from rasterio.transform import Affine
    from rasterio.windows import Window

    from segcore.data.synthetic import generate_scene

    scenes = [generate_scene(block, seed).image.transpose(2, 0, 1) for seed in range(4)]
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8", "tiled": True,
               "blockxsize": 256, "blockysize": 256, "compress": "deflate", "crs": "EPSG:32633",
               "transform": Affine(0.5, 0, 500000.0, 0, -0.5, 5000000.0), "BIGTIFF": "IF_SAFER"}
    with rasterio.open(path, "w", **profile) as ds:
        for i, row in enumerate(range(0, side, block)):
            for j, col in enumerate(range(0, side, block)):
                img = scenes[(i + 2 * j) % 4][:, :, :: (-1) ** (i + j)]
                h, w = min(block, side - row), min(block, side - col)
                ds.write(np.ascontiguousarray(img[:, :h, :w]), window=Window(col, row, w, h))


def engine_table(args, export_dir: Path, model) -> list[str]:
    import numpy as np
    import torch

    from segcore.data.synthetic import generate_scene
    from segcore.runtime import load_export

    nm = load_export(export_dir)
    half = generate_scene(args.tile // 2, 1).image
    image = np.tile(half, (2, 2, 1))
    x = torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 255.0)[None]
    mp = args.tile * args.tile / 1e6
    rows = ["| stage | torch eager MP/s | numpy runtime MP/s | numpy / torch |", "|---|---|---|---|"]
    with torch.no_grad():
        pairs = {
            "embed (student + L2)": (lambda: model.embed(x), lambda: nm.embed(image)),
            f"segment (embed + fit k={args.k} + assign + x4 labels)": (lambda: model(x, k=args.k),
                                                                      lambda: nm.segment(image, args.k)),
        }
        for name, (t_fn, n_fn) in pairs.items():
            t_fn(), n_fn()  # warm up
            tt, tn = best_of(t_fn, args.repeat), best_of(n_fn, args.repeat)
            rows.append(f"| {name} | {mp / tt:.2f} | {mp / tn:.2f} | {tt / tn:.2f} |")
    return rows


def codebook_table(args, model, cfg, work: Path) -> list[str]:
    """Codebook inference (fixed head, frozen norms) to labels: onnxruntime vs numpy vs torch, one image."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from segcore.codebook import CodebookRequest, load_codebook
    from segcore.data.synthetic import generate_scene
    from segcore.export import export_model
    from segcore.onnx_export import CodebookSegmenter
    from segcore.runtime import load_export

    export_dir = export_model(model, cfg, work / "export-onnx", codebook=CodebookRequest(k=args.codebook_k),
                              onnx=True)
    nm = load_export(export_dir)
    cb = load_codebook(export_dir, nm.meta)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
    sess = ort.InferenceSession(str(export_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    wrapper = CodebookSegmenter(model, cb).eval()
    image = np.tile(generate_scene(args.tile // 2, 1).image, (2, 2, 1))
    x = image.transpose(2, 0, 1).astype(np.float32)[None] / np.float32(255.0)
    xt = torch.from_numpy(x)
    mp = args.tile * args.tile / 1e6
    with torch.no_grad():
        engines = {
            "onnxruntime (model.onnx)": lambda: sess.run(None, {"image": x})[0][0].argmax(0),
            "numpy runtime": lambda: nm.assign(nm.embed(image, cb.stats), cb.prototypes, image.shape[:2])[1],
            "torch eager (the wrapper ONNX is exported from)": lambda: wrapper(xt)[0].argmax(0),
        }
        labels = {name: fn() for name, fn in engines.items()}  # warm up, and the agreement column
        ref = labels["numpy runtime"]
        rows = [f"| engine (codebook k={args.codebook_k}, {args.tile} px, labels) | MP/s | pixels differing "
                "from numpy |", "|---|---|---|"]
        for name, fn in engines.items():
            t = best_of(fn, args.repeat)
            rows.append(f"| {name} | {mp / t:.2f} | {int((np.asarray(labels[name]) != ref).sum())} |")
    return rows


def predict_table(args, export_dir: Path, work: Path) -> list[str]:
    rows = ["| raster | tiles | wall s | MP/s | peak RSS (MiB) |", "|---|---|---|---|---|"]
    sides = [args.predict_side] + [int(s) for s in args.rss_sides.split(",") if s]
    for side in dict.fromkeys(sides):
        src = work / f"big-{side}.tif"
        write_big_raster(src, side)
        out = subprocess.run([sys.executable, "-c", CHILD, str(export_dir), str(src), str(work / f"out-{side}.tif"),
                              str(args.tile)], cwd=ROOT, capture_output=True, text=True, check=True)
        w, h, tiles, dt, rss_kb = out.stdout.split()
        mp = int(w) * int(h) / 1e6
        rows.append(f"| {w} x {h} | {tiles} | {float(dt):.1f} | {mp / float(dt):.2f} | {int(rss_kb) / 1024:.0f} |")
        src.unlink()
        (work / f"out-{side}.tif").unlink()
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tile", type=int, default=1024)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--predict-side", type=int, default=4096)
    p.add_argument("--rss-sides", default="2048,10240")
    p.add_argument("--codebook-k", type=int, default=8, help="classes of the codebook in the ONNX table")
    p.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime / numpy / torch codebook table")
    p.add_argument("--no-predict", action="store_true", help="skip the large-raster predict table")
    args = p.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # idle torch workers must not spin against BLAS threads
    import torch

    from segcore.config import Config
    from segcore.export import export_model
    from segcore.models import build_segmenter

    torch.set_num_threads(args.threads)
    cfg = Config()
    torch.manual_seed(0)
    model = build_segmenter(cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export_dir = export_model(model, cfg, work / "export")
        print(f"load average before the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n")
        print(f"## Numpy runtime vs torch eager: {args.tile} x {args.tile} image, {args.threads} threads, "
              f"default config (embed_dim {cfg.model.embed_dim}, max_k {cfg.model.max_k})\n")
        print("\n".join(engine_table(args, export_dir, model)) + "\n")
        if not args.no_onnx:
            print(f"## Codebook inference: onnxruntime / numpy / torch, {args.threads} threads, one run\n")
            print("\n".join(codebook_table(args, model, cfg, work)) + "\n")
        if not args.no_predict:
            print(f"## segcore predict (numpy, tile {args.tile}, k=16), one child process per raster\n")
            print("\n".join(predict_table(args, export_dir, work)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
