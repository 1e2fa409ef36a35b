"""Batch prediction inputs and outputs: which rasters a folder or glob names, where each result goes."""

from __future__ import annotations

from pathlib import Path

from segcore.config import DataConfig
from segcore.data.raster import discover_sources


def list_rasters(spec: str | list[str]) -> list[str]:
    """The rasters named by ``spec``: a directory, a glob, a file, or a list of those (stable order).

    A directory or glob that names nothing is a :class:`~segcore.errors.RasterError`.
    """
    entries = [spec] if isinstance(spec, str) else list(spec)
    return [src.image for src in discover_sources(DataConfig(raster_paths=tuple(entries)))]


def output_paths(rasters: list[str], out_dir: str) -> list[str]:
    """``<out_dir>/<stem>.labels.tif`` per raster; ValueError when two rasters share a stem."""
    outs = [str(Path(out_dir) / f"{Path(r).stem}.labels.tif") for r in rasters]
    if len(set(outs)) != len(outs):
        dup = sorted({o for o in outs if outs.count(o) > 1})
        raise ValueError(f"rasters with the same file stem would overwrite each other in {out_dir}: {dup}; "
                         "rename them or predict them into separate directories")
    return outs
