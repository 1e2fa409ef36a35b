"""From an export to map products: label GeoTIFFs (+ ``.qml``), a VRT mosaic, GeoPackage polygons.

:func:`class_plan` decides how ids are assigned (``codebook``: the export's dataset codebook, the
same ids in every raster; ``raster``: prototypes fitted per raster) and what the classes are called.
:func:`predict_to_map` predicts one raster or many (a directory, a glob, or a manifest CSV) with
:func:`segcore.predict.predict_raster`, writes ``mosaic.vrt`` over many outputs of one grid
(:func:`segcore.style.write_vrt`), and polygons with :func:`segcore.vector.polygonize`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from segcore.codebook import (
    Codebook,
    class_groups,
    default_class_names,
    load_codebook,
    prototype_names,
    read_class_names,
)
from segcore.config import Config, DataConfig
from segcore.errors import ConfigError, RasterError
from segcore.predict import PredictResult, predict_raster
from segcore.runtime import NumpyModel
from segcore.safety import claim_output_file
from segcore.style import write_vrt
from segcore.vector import VectorResult, polygonize

log = logging.getLogger(__name__)

MODES = ("auto", "codebook", "raster")
MOSAIC = "mosaic.vrt"


@dataclass(frozen=True)
class ClassPlan:
    """How a prediction assigns ids: ``mode``, the ``codebook`` (codebook mode), ``k`` and ``names``
    (one per id; codebook ids named alike are one class of the output, see :attr:`legend`)."""

    mode: str
    codebook: Codebook | None
    k: int
    names: list[str]

    @property
    def legend(self) -> list[str]:
        """The output's classes ``1..n``: the distinct names, in order of first appearance."""
        return class_groups(self.names)[0]


@dataclass(frozen=True)
class MapResult:
    """What :func:`predict_to_map` wrote."""

    rasters: list[PredictResult]
    mosaic: Path | None = None
    vectors: list[VectorResult] = field(default_factory=list)


def class_plan(model: NumpyModel, export_dir: str | Path, mode: str = "auto", k: int | None = None,
               names: list[str] | tuple[str, ...] | None = None, names_file: str | None = None) -> ClassPlan:
    """Resolve the classes of a prediction with ``model`` (loaded from ``export_dir``).

    ``mode``: ``auto`` (the codebook when the export has one, else per raster), ``codebook`` or
    ``raster``. Names: ``names_file`` (see :func:`~segcore.codebook.read_class_names`), else
    ``names`` (config ``predict.class_names``), else the export's names (codebook mode), else
    ``class 1..k``. A codebook grouped at export (``segcore export --codebook-merge-from``) also
    takes one name per class and names its prototypes after them. Raises :class:`ConfigError` for
    an unknown mode, a codebook-mode request on an export without a codebook, a ``k`` the codebook
    does not have, or a wrong number of names.
    """
    if mode not in MODES:
        raise ConfigError(f"classes mode {mode!r}; valid modes: {', '.join(MODES)}")
    codebook = load_codebook(export_dir, model.meta) if mode != "raster" else None
    if mode == "codebook" and codebook is None:
        raise ConfigError(f"export {export_dir} has no codebook; re-export it (segcore export fits one by "
                          "default) or predict with --classes raster")
    if codebook is not None and k is not None and k != codebook.k:
        if mode == "codebook":
            raise ConfigError(f"--k {k}: the codebook of {export_dir} has k={codebook.k}; drop --k, use "
                              "--classes raster, or re-export with --codebook-k")
        log.info("k=%d differs from the codebook's k=%d: predicting per raster", k, codebook.k)
        codebook = None
    if codebook is not None:
        k = codebook.k
        chosen = list(model.meta.get("class_names") or default_class_names(k))
    else:
        k = model.max_k if k is None else int(k)
        chosen = default_class_names(k)
    if names_file:
        chosen = read_class_names(names_file)
    elif names:
        chosen = list(names)
    merge = codebook.record.get("merge") if codebook is not None else None
    if (names_file or names) and merge and len(chosen) == merge["classes"] != k:
        chosen = prototype_names(chosen, merge)  # names given per grouped class, not per prototype
    if len(chosen) != k:
        raise ConfigError(f"{len(chosen)} class names for k={k} classes; give exactly one name per class")
    class_groups(chosen, mergeable=codebook is not None)  # repeated names merge codebook ids only
    return ClassPlan("codebook" if codebook is not None else "raster", codebook, k, chosen)


def expand_inputs(entry: str) -> tuple[list[str], bool]:
    """Rasters named by ``entry`` (file, directory, glob, or manifest CSV) and whether it names many."""
    from segcore.data.raster import discover_sources

    if entry.lower().endswith(".csv"):
        paths = [s.image for s in discover_sources(DataConfig(manifest=entry))]
        return paths, True
    paths = [s.image for s in discover_sources(DataConfig(raster_paths=(entry,)))]
    return paths, Path(entry).is_dir() or any(ch in entry for ch in "*?[")


def output_paths(inputs: list[str], output: str | Path, many: bool) -> list[Path]:
    """``output`` itself for one raster; ``<output>/<stem>.tif`` per raster for many (stems must differ)."""
    if not many:
        return [Path(output)]
    outs = [Path(output) / f"{Path(p).stem}.tif" for p in inputs]
    if len(set(outs)) != len(outs):
        raise RasterError(f"two input rasters share a file name stem; their outputs in {output} would collide")
    return outs


def predict_to_map(
    inputs: list[str],
    outputs: list[Path],
    model: NumpyModel,
    plan: ClassPlan,
    cfg: Config,
    *,
    overviews: bool = False,
    vector: str | Path | None = None,
    progress: bool = True,
) -> MapResult:
    """Predict every ``inputs[i]`` into ``outputs[i]``; mosaic and polygons as asked.

    ``vector``: a ``.gpkg`` path for one raster, a directory for many (``<dir>/<stem>.gpkg`` each);
    polygons use ``cfg.predict.vector_min_area`` and ``cfg.predict.vector_simplify``.
    """
    p = cfg.predict
    # Every output is claimed before anything is written: a refusal never leaves half a product.
    for dst in outputs:
        claim_output_file(dst, inputs=inputs, what="output")
    mosaic_path = outputs[0].parent / MOSAIC if len(outputs) > 1 else None
    if mosaic_path is not None:
        claim_output_file(mosaic_path, inputs=inputs, what="mosaic", kind="mosaic")
    targets = []
    if vector is not None:
        targets = [Path(vector)] if len(outputs) == 1 else [Path(vector) / f"{o.stem}.gpkg" for o in outputs]
        for gpkg in targets:
            claim_output_file(gpkg, inputs=[*inputs, *outputs], what="--vector output", kind="polygons")
    results = []
    for src, dst in zip(inputs, outputs, strict=True):
        results.append(predict_raster(
            src, dst, model, plan.k, tile=p.tile, halo=p.halo, sample_pixels=p.sample_pixels, data_cfg=cfg.data,
            progress=progress, region_m=p.region_m, region_compactness=p.region_compactness,
            prior_rounds=p.prior_rounds, codebook=plan.codebook, class_names=plan.names, overviews=overviews))
    mosaic = None
    if mosaic_path is not None:
        try:
            mosaic = write_vrt(outputs, mosaic_path, plan.legend)
        except RasterError as exc:
            log.warning("no mosaic.vrt: %s", exc)
    vectors = []
    if vector is not None:
        for labels, gpkg in zip(outputs, targets, strict=True):
            vectors.append(polygonize(labels, gpkg, plan.legend, min_area=p.vector_min_area,
                                      simplify=p.vector_simplify))
    return MapResult(results, mosaic, vectors)
