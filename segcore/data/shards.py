"""Shard builder: rasters -> tiled GeoTIFF shards with SLIC, per-shard index tables, a manifest.

Layout (``docs/data.md``)::

    <processed_root>/<dataset>/manifest.json
    <processed_root>/<dataset>/<split>/shard-00000/{index.csv, shard.json,
                                                   00000.rgb.tif, 00000.slic.tif, 00000.target.tif, ...}

Public units of work, in order (a Prefect flow can fan ``write_shard`` out):
``plan_build(cfg) -> BuildPlan``, ``write_shard(plan, shard) -> ShardResult`` (one per shard, any
process, any order), ``publish(plan, results) -> Path``. :func:`build_shards` runs all three.

Atomicity: shards are written into ``<processed_root>/.staging-<dataset>/`` as ``.tmp-*``
directories and renamed into place when complete; the staging directory replaces the published
dataset only after every shard and ``manifest.json`` exist. A killed build leaves the previous
dataset (or none) visible; a re-run reuses every staged (or published) shard whose ``shard.json``
build key and file checksums match, so it ends byte-identical to an uninterrupted build.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from segcore.checks import check_utf8
from segcore.config import Config
from segcore.data.raster import RasterSource, discover_sources
from segcore.data.shard_index import (
    ShardResult,
    publish,
    published_keys,
    read_manifest,
    reuse_shard,
    write_shard,
)
from segcore.data.shard_plan import (
    BuildPlan,
    RasterPlan,
    assign_splits,
    dataset_dirs,
    make_shards,
    plan_raster,
)
from segcore.errors import RasterError, SegcoreError, ShardError
from segcore.safety import (
    check_staging,
    claim_output_dir,
    exclusive_lock,
    lock_path_for,
    remove_staging_leftovers,
)

log = logging.getLogger(__name__)

__all__ = [
    "BuildPlan",
    "BuildSummary",
    "ShardResult",
    "build_shards",
    "plan_build",
    "publish",
    "read_manifest",
    "write_shard",
]


@dataclass
class BuildSummary:
    """What a build did. ``megapixels_per_s`` counts written tile pixels over the whole build time."""

    root: str
    rasters: int
    tiles_written: int
    tiles_skipped: dict[str, int]
    shards_written: int
    shards_reused: int
    splits: dict[str, int]
    seconds: float
    megapixels: float
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def megapixels_per_s(self) -> float:
        return self.megapixels / self.seconds if self.seconds > 0 else 0.0

    def table(self) -> str:
        """Markdown summary table (and the failures, if any)."""
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.tiles_skipped.items())) or "0"
        splits = ", ".join(f"{k}: {v}" for k, v in sorted(self.splits.items())) or "-"
        rows = [
            ("output", self.root),
            ("rasters", str(self.rasters)),
            ("rasters failed", str(len(self.failures))),
            ("tiles written", f"{self.tiles_written} ({splits})"),
            ("tiles skipped", skipped),
            ("shards", f"{self.shards_written} written, {self.shards_reused} reused"),
            ("megapixels", f"{self.megapixels:.1f}"),
            ("seconds", f"{self.seconds:.1f}"),
            ("megapixels/s", f"{self.megapixels_per_s:.2f}"),
        ]
        lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
        lines += [f"\nfailed: {path}: {msg}" for path, msg in self.failures]
        return "\n".join(lines)


def plan_build(cfg: Config, on_error: str = "fail", exclude: tuple[str, ...] = (), pool=None) -> BuildPlan:
    """Validate every input raster and fix every shard's tiles (nothing is written).

    ``on_error="fail"`` raises the first :class:`RasterError`; ``"skip"`` records it in
    ``plan.failures`` and plans the rest. ``exclude`` drops image paths (used after a failed write).
    """
    _check_on_error(on_error)
    root, staging = dataset_dirs(cfg)
    sources = [s for s in discover_sources(cfg.data) if s.image not in exclude]
    inputs = [p for s in sources for p in (s.image, s.label)] + [cfg.data.manifest]
    claim_output_dir(root, "shards", inputs=inputs, what="dataset directory (data.processed_root/data.dataset)",
                     error=ShardError)
    results = _map(pool, _plan_one, [(s, cfg) for s in sources])
    rasters, windows, failures = [], [], [(p, "excluded after a failed shard write") for p in exclude]
    for source, result in zip(sources, results, strict=True):
        if isinstance(result, SegcoreError):
            if on_error == "fail":
                raise result
            log.warning("skipping %s: %s", source.image, result)
            failures.append((source.image, str(result)))
            continue
        rasters.append(result[0])
        windows.append(result[1])
    _check_duplicates(rasters)
    tiles = assign_splits(rasters, windows, cfg.data)
    shards = make_shards(rasters, tiles, cfg)
    return BuildPlan(cfg, root, staging, tuple(rasters), tuple(shards), tuple(failures))


def _plan_one(source: RasterSource, cfg: Config):
    try:
        for path in (source.image, source.label):
            if path:
                check_utf8(path)  # such names cannot go into index.csv, manifest.json or MLflow
        return plan_raster(source, cfg.data)
    except SegcoreError as exc:
        return exc


def _check_duplicates(rasters: list[RasterPlan]) -> None:
    seen: dict[str, str] = {}
    for plan in rasters:
        if plan.sha256 in seen:
            raise RasterError(f"{plan.source.image}: same bytes as {seen[plan.sha256]}; list each raster once")
        seen[plan.sha256] = plan.source.image


def _check_on_error(on_error: str) -> None:
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error={on_error!r} must be 'fail' or 'skip'")


def _map(pool, fn, arg_tuples):
    if pool is None:
        return [fn(*args) for args in arg_tuples]
    return list(pool.map(fn, *zip(*arg_tuples, strict=True))) if arg_tuples else []


def prepare_staging(staging: Path) -> None:
    """Create the staging directory and drop half-written ``.tmp-*`` shard directories of a killed run.

    Refuses (OutputError) when the dataset directory or the staging directory holds files that
    segcore did not write (``segcore.safety``): nothing of the user's is ever deleted.
    """
    claim_output_dir(staging.with_name(staging.name.removeprefix(".staging-")), "shards",
                     what="dataset directory (data.processed_root/data.dataset)", error=ShardError)
    check_staging(staging)
    try:
        staging.mkdir(parents=True, exist_ok=True)
        probe = staging / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ShardError(
            f"{staging}: cannot create or write the output directory ({exc.strerror or exc}); "
            "choose a writable data.processed_root"
        ) from exc
    for split_dir in staging.iterdir():
        if split_dir.is_dir():
            for tmp in split_dir.glob(".tmp-*"):
                shutil.rmtree(tmp, ignore_errors=True)


def build_shards(
    cfg: Config,
    on_error: str = "fail",
    progress: bool = True,
    on_shard_done: Callable[[ShardResult], None] | None = None,
) -> BuildSummary:
    """Plan, write (``cfg.data.num_workers`` processes) and publish a shard dataset.

    ``on_shard_done`` is called in this process after each shard is in place in the staging
    directory (tests use it to simulate a kill). Returns the :class:`BuildSummary`.

    Holds the dataset's lock (``.<dataset>.lock`` beside it) throughout (:func:`building`).
    """
    _check_on_error(on_error)
    with building(cfg) as (_, staging):
        return _build_locked(cfg, on_error, progress, on_shard_done, staging)


@contextmanager
def building(cfg: Config) -> Iterator[tuple[Path, Path]]:
    """Hold the dataset's build lock for the block; yields ``(root, staging)``.

    Every builder of a dataset (:func:`build_shards`, and the fan-out flow, which plans, writes
    through other processes and publishes under this one lock) enters it: a concurrent build of
    the same dataset fails at once with a BusyError naming the holder's PID. When the block fails
    (SIGTERM included, see :func:`segcore.safety.terminate_raises`) the ``.tmp-*`` directories are
    removed, and the staging directory too unless it holds completed shards a re-run can reuse.
    """
    root, staging = dataset_dirs(cfg)  # validates data.dataset
    # Checked before the lock file is created beside it, and again (with the inputs) once locked.
    claim_output_dir(root, "shards", what="dataset directory (data.processed_root/data.dataset)", error=ShardError)
    with exclusive_lock(lock_path_for(root), f"dataset {root}", doing="built"):
        try:
            yield root, staging
        except BaseException:
            remove_staging_leftovers(staging)
            raise


def _build_locked(cfg: Config, on_error: str, progress: bool, on_shard_done, staging: Path) -> BuildSummary:
    prepare_staging(staging)
    start = time.perf_counter()
    workers = cfg.data.num_workers
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if workers > 0 else None
    try:
        exclude: tuple[str, ...] = ()
        while True:
            plan = plan_build(cfg, on_error, exclude, pool)
            if not plan.shards:
                raise ShardError(_no_tiles_message(plan))
            results, failed = _write_all(plan, pool, progress, on_shard_done, on_error)
            if not failed:
                break
            exclude += tuple(failed)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    root = publish(plan, results)
    return _summary(plan, results, root, time.perf_counter() - start)


def _no_tiles_message(plan: BuildPlan) -> str:
    failed = "; ".join(f"{p}: {m}" for p, m in plan.failures)
    return (
        f"{plan.root}: no tile to write from {len(plan.rasters)} raster(s) (every tile below "
        f"data.min_valid={plan.cfg.data.min_valid}){'; failures: ' + failed if failed else ''}; check the inputs"
    )


def _write_all(plan, pool, progress, on_shard_done, on_error) -> tuple[list[ShardResult], list[str]]:
    """Write (or reuse) every shard; with ``skip``, the image paths whose reads failed."""
    from tqdm import tqdm

    results: dict[int, ShardResult] = {}
    todo = []
    published = published_keys(plan.root) if plan.root.is_dir() else {}
    for i, shard in enumerate(plan.shards):
        reused = reuse_shard(plan, shard, published)
        if reused is not None:
            results[i] = reused
        else:
            todo.append(i)
    bar = tqdm(total=plan.tiles, unit="tile", file=sys.stderr, disable=not progress, desc="build-shards")
    bar.update(sum(len(plan.shards[i].tiles) for i in results))
    failed: list[str] = []
    for i, outcome in _run_shards(plan, pool, todo):
        if isinstance(outcome, RasterError):
            if on_error == "fail":
                bar.close()
                raise outcome
            failed.append(_failed_image(plan, outcome))
            continue
        results[i] = outcome
        bar.update(len(plan.shards[i].tiles))
        if on_shard_done is not None:
            on_shard_done(outcome)
    bar.close()
    return [results[i] for i in sorted(results)], sorted(set(failed))


def _run_shards(plan, pool, todo):
    if pool is None:
        for i in todo:
            yield i, _write_or_error(plan, plan.shards[i])
        return
    # Largest shards first keeps the workers evenly busy; results still come back in shard order.
    by_size = sorted(todo, key=lambda i: (-len(plan.shards[i].tiles), i))
    futures = {i: pool.submit(_write_or_error, plan, plan.shards[i]) for i in by_size}
    for i in todo:  # in shard order: the callback and the progress bar see a stable sequence
        yield i, futures[i].result()


def _write_or_error(plan: BuildPlan, shard) -> ShardResult | RasterError:
    try:
        return write_shard(plan, shard)
    except RasterError as exc:
        return exc


def _failed_image(plan: BuildPlan, exc: RasterError) -> str:
    for r in plan.rasters:
        if str(exc).startswith(r.source.image) or (r.source.label and str(exc).startswith(r.source.label)):
            return r.source.image
    raise exc


def _summary(plan: BuildPlan, results: list[ShardResult], root: Path, seconds: float) -> BuildSummary:
    skipped: dict[str, int] = {}
    for r in plan.rasters:
        for why, n in r.skipped.items():
            skipped[why] = skipped.get(why, 0) + n
    splits: dict[str, int] = {}
    for s in plan.shards:
        splits[s.split] = splits.get(s.split, 0) + len(s.tiles)
    pixels = sum(t.width * t.height for s in plan.shards for t in s.tiles)
    summary = BuildSummary(
        root=str(root),
        rasters=len(plan.rasters),
        tiles_written=plan.tiles,
        tiles_skipped=skipped,
        shards_written=sum(not r.reused for r in results),
        shards_reused=sum(r.reused for r in results),
        splits=splits,
        seconds=seconds,
        megapixels=pixels / 1e6,
        failures=list(plan.failures),
    )
    log.info("built %s: %d tiles in %d shards", root, summary.tiles_written, len(results))
    return summary
