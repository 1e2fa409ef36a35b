"""Names and colours that travel with a prediction: colour table, band description, ``.qml``, VRT.

A label GeoTIFF (``uint8``, 0 = nodata, classes ``1..k``) gets, by :func:`style_labels`:

* a GDAL colour table (0 transparent, class ``i`` the colour ``palette(k)[i - 1]``), so any GIS shows
  it coloured without a style;
* a band description (``segcore classes: <mode>, k=<k>``) and band tags ``class_names`` (JSON list)
  and ``classes_mode``;
* optionally internal overviews (``mode`` resampling, factors 2, 4, ... down to about 256 px).

:func:`write_qml` writes the QGIS style beside it (``<stem>.qml``, which QGIS loads automatically):
a paletted renderer with one entry per class, labelled with the class name. :func:`write_vrt`
mosaics many label rasters of one CRS and resolution into a GDAL VRT carrying the same colour table
and category names.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning

from segcore.errors import RasterError
from segcore.safety import MOSAIC_TAG_VALUE, PREDICT_TAG, claim_output_file

#: Distinct colours for the first classes (Tableau 10 + 10 more); beyond them, golden-ratio hues.
BASE_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
    "#dbdb8d", "#9edae5",
)  # fmt: skip
OVERVIEW_MIN_SIDE = 256


def palette(k: int) -> list[tuple[int, int, int]]:
    """``k`` RGB colours for classes ``1..k`` (deterministic)."""
    out = [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in BASE_COLOURS[:k]]
    for i in range(len(out), k):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.9)
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    return out  # type: ignore[return-value]


def colormap(k: int) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table: ``0`` transparent black (nodata), class ``i`` opaque ``palette(k)[i - 1]``."""
    table = {0: (0, 0, 0, 0)}
    table.update({i + 1: (*rgb, 255) for i, rgb in enumerate(palette(k))})
    return table


def overview_factors(width: int, height: int, min_side: int = OVERVIEW_MIN_SIDE) -> list[int]:
    """Factors ``2, 4, ...`` while the overview's longer side stays at least ``min_side``."""
    factors, f = [], 2
    while max(width, height) / f >= min_side:
        factors.append(f)
        f *= 2
    return factors


def style_labels(path: str | Path, class_names: list[str], mode: str, *, overviews: bool = False) -> None:
    """Add colour table, band description, class-name tags and (optionally) overviews to ``path``.

    ``path`` is a one-band ``uint8`` label GeoTIFF not yet visible to readers (a temp file).
    """
    k = len(class_names)
    if not 1 <= k <= 255:
        raise ValueError(f"{k} classes; a uint8 label raster holds 1..255")
    with warnings.catch_warnings():  # a raster without georeferencing is valid here: it stays without
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        ds = rasterio.open(path, "r+")
    with ds:
        ds.write_colormap(1, colormap(k))
        ds.set_band_description(1, f"segcore classes: {mode}, k={k}")
        ds.update_tags(1, class_names=json.dumps(class_names), classes_mode=mode)
        if overviews:
            factors = overview_factors(ds.width, ds.height)
            if factors:
                ds.build_overviews(factors, Resampling.mode)
                ds.update_tags(ns="rio_overview", resampling="mode")


def qml_document(class_names: list[str]) -> str:
    """QGIS style XML: a paletted renderer on band 1 with one labelled entry per class."""
    root = ET.Element("qgis", version="3.28.0", styleCategories="AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", type="paletted", band="1", opacity="1",
                             alphaBand="-1", nodataColor="")
    ET.SubElement(renderer, "rasterTransparency")
    entries = ET.SubElement(renderer, "colorPalette")
    for i, (name, (r, g, b)) in enumerate(zip(class_names, palette(len(class_names)), strict=True), start=1):
        ET.SubElement(entries, "paletteEntry", value=str(i), color=f"#{r:02x}{g:02x}{b:02x}", alpha="255",
                      label=name)
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(root, encoding="unicode") + "\n"


def qml_path(raster: str | Path) -> Path:
    """Where QGIS looks for a raster's default style: ``<dir>/<stem>.qml``."""
    raster = Path(raster)
    return raster.with_name(raster.stem + ".qml")


def write_text_atomic(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_qml(raster: str | Path, class_names: list[str]) -> Path:
    """Write the paletted ``.qml`` beside ``raster``; return its path."""
    return write_text_atomic(qml_path(raster), qml_document(class_names))


def read_qml_palette(path: str | Path) -> dict[int, tuple[str, str]]:
    """``{value: (colour "#rrggbb", label)}`` of a paletted ``.qml`` (for checks and tests)."""
    root = ET.parse(path).getroot()
    return {int(e.get("value")): (e.get("color"), e.get("label")) for e in root.iter("paletteEntry")}


def write_vrt(rasters: list[str | Path], out: str | Path, class_names: list[str]) -> Path:
    """Mosaic label rasters of one CRS and pixel size into a VRT (``out``), with colours and names.

    Later rasters are drawn over earlier ones except where they are nodata (0). Source paths are
    stored relative to the VRT. Raises :class:`RasterError` when the rasters are not georeferenced,
    differ in CRS or pixel size, or are rotated, and :class:`~segcore.errors.OutputError` when
    ``out`` exists and is not a mosaic segcore wrote (it is then left alone).
    """
    out = claim_output_file(out, inputs=rasters, what="mosaic", kind="mosaic")
    infos = []
    for path in rasters:
        with rasterio.open(path) as ds:
            infos.append((Path(path), ds.crs, ds.transform, ds.width, ds.height))
    crs, t0 = infos[0][1], infos[0][2]
    for path, c, t, _, _ in infos:
        if c is None or t.is_identity:
            raise RasterError(f"{path}: not georeferenced; a mosaic needs every raster placed on a map")
        if c != crs or not (math.isclose(t.a, t0.a, rel_tol=1e-9) and math.isclose(t.e, t0.e, rel_tol=1e-9)):
            raise RasterError(f"{path}: CRS or pixel size differs from {infos[0][0]}; mosaic rasters of one grid")
        if t.b != 0 or t.d != 0:
            raise RasterError(f"{path}: rotated rasters cannot be mosaicked into a VRT")
    res_x, res_y = t0.a, t0.e  # res_y < 0 for north-up
    left = min(t.c for _, _, t, _, _ in infos)
    right = max(t.c + w * res_x for _, _, t, w, _ in infos)
    edges = [t.f for _, _, t, _, _ in infos], [t.f + h * res_y for _, _, t, _, h in infos]
    top, bottom = (max(edges[0]), min(edges[1])) if res_y < 0 else (min(edges[0]), max(edges[1]))
    width, height = round((right - left) / res_x), round((bottom - top) / res_y)
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(root, "SRS").text = crs.to_wkt()
    ET.SubElement(ET.SubElement(root, "Metadata"), "MDI", key=PREDICT_TAG).text = MOSAIC_TAG_VALUE
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in (left, res_x, 0.0, top, 0.0, res_y))
    band = ET.SubElement(root, "VRTRasterBand", dataType="Byte", band="1")
    ET.SubElement(band, "NoDataValue").text = "0"
    ET.SubElement(band, "ColorInterp").text = "Palette"
    ET.SubElement(band, "Description").text = f"segcore classes, k={len(class_names)}"
    cats = ET.SubElement(band, "CategoryNames")
    for name in ["nodata", *class_names]:
        ET.SubElement(cats, "Category").text = name
    table = ET.SubElement(band, "ColorTable")
    for _, (r, g, b, a) in sorted(colormap(len(class_names)).items()):
        ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4=str(a))
    for path, _, t, w, h in infos:
        src = ET.SubElement(band, "ComplexSource")
        rel = os.path.relpath(path.resolve(), out.resolve().parent)
        ET.SubElement(src, "SourceFilename", relativeToVRT="1").text = rel
        ET.SubElement(src, "SourceBand").text = "1"
        ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))
        ET.SubElement(src, "DstRect", xOff=repr((t.c - left) / res_x), yOff=repr((t.f - top) / res_y),
                      xSize=str(w), ySize=str(h))
        ET.SubElement(src, "NODATA").text = "0"
    ET.indent(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out, ET.tostring(root, encoding="unicode") + "\n")

