"""model.onnx against the numpy runtime on real imagery: probabilities and labels, pixel by pixel.

Exports ``--checkpoint`` with a codebook and ``--onnx`` (or uses ``--export`` if it already holds
``model.onnx``), then runs crops of real rasters through onnxruntime and through the numpy runtime's
codebook path (``embed(image, stats)`` + probabilities, upsampled x4 like its labels) and reports
the largest probability difference, how many pixels get another label, and how many of those are
near-ties (top-two probabilities within 1e-4 in the numpy result).

    python bench/onnx_check.py --checkpoint bench/out/codebook_modes/deepglobe-sample-s0/run/checkpoints/last.pt \
        ../shared/data/deepglobe-sample/images/*.tif
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from segcore.codebook import CodebookRequest, load_codebook
from segcore.export import export_checkpoint
from segcore.runtime import STRIDE, coordinate_taps, load_export

CROPS = ((512, 512), (509, 631))  # a square tile and an odd size (padding inside the graph)


def numpy_probabilities(model, codebook, image: np.ndarray) -> np.ndarray:
    """``(K, H, W)``: the numpy runtime's codebook probabilities upsampled x4 (as its labels are)."""
    h, w = image.shape[:2]
    probs = model.probabilities(model.embed(image, codebook.stats), codebook.prototypes)
    r0, r1, rl = coordinate_taps(probs.shape[1], (np.arange(h) + 0.5) / STRIDE - 0.5)
    c0, c1, cl = coordinate_taps(probs.shape[2], (np.arange(w) + 0.5) / STRIDE - 0.5)
    pw = probs[:, :, c0] * (1.0 - cl) + probs[:, :, c1] * cl
    return pw[:, r0] * (1.0 - rl)[None, :, None] + pw[:, r1] * rl[None, :, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rasters", nargs="+", type=Path, help="RGB rasters to crop (the centre of each)")
    parser.add_argument("--checkpoint", type=Path, help="training checkpoint to export with --onnx")
    parser.add_argument("--export", type=Path, help="an export holding model.onnx (instead of --checkpoint)")
    parser.add_argument("--out", type=Path, default=Path("bench/out/onnx_check"))
    parser.add_argument("--k", type=int, default=6)
    args = parser.parse_args()
    import onnxruntime as ort

    export = args.export
    if export is None:
        shards = args.checkpoint.parents[2] / "processed" / "bench"
        source = str(shards) if (shards / "manifest.json").is_file() else str(args.rasters[0].parent)
        t0 = time.perf_counter()
        export = export_checkpoint(args.checkpoint, args.out / "export", onnx=True,
                                   codebook=CodebookRequest(k=args.k, source=source))
        print(f"exported with codebook and model.onnx in {time.perf_counter() - t0:.0f} s")
    model = load_export(export)
    codebook = load_codebook(export, model.meta)
    sess = ort.InferenceSession(str(export / "model.onnx"), providers=["CPUExecutionProvider"])
    print("| raster | crop | max abs prob. diff | pixels | labels differing | of which near-ties (< 1e-4) |")
    print("|---|---|---|---|---|---|")
    totals = np.zeros(3, np.int64)
    worst = 0.0
    for path in args.rasters:
        for h, w in CROPS:
            with rasterio.open(path) as ds:
                r0, c0 = (ds.height - h) // 2, (ds.width - w) // 2
                image = np.ascontiguousarray(ds.read([1, 2, 3], window=Window(c0, r0, w, h)).transpose(1, 2, 0))
            (onnx_probs,) = sess.run(None, {"image": (image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]})
            ref = numpy_probabilities(model, codebook, image)
            labels = model.assign(model.embed(image, codebook.stats), codebook.prototypes, (h, w))[1]
            diff = float(np.abs(onnx_probs[0] - ref).max())
            differ = onnx_probs[0].argmax(0) != labels
            top2 = np.sort(ref, axis=0)[-2:]
            ties = int((differ & (top2[1] - top2[0] < 1e-4)).sum())
            worst = max(worst, diff)
            totals += (h * w, int(differ.sum()), ties)
            print(f"| {path.name} | {h} x {w} | {diff:.1e} | {h * w} | {int(differ.sum())} | {ties} |")
    print(f"| all | | {worst:.1e} | {totals[0]} | {totals[1]} | {totals[2]} |")


if __name__ == "__main__":
    main()
