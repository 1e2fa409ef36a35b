"""Ownership of outputs, exclusive locks, and cleanup on termination (``docs/reliability.md``).

Rules this module enforces for every command that writes:

* **Ownership.** An output location that exists is replaced only when it is recognisably segcore's
  own output of the same kind (:data:`SIGNATURES`: a shard dataset with its ``manifest.json``, an
  export with its ``meta.json``, a run directory with ``config.json``...). Anything else that is not
  empty is refused with an :class:`~segcore.errors.OutputError`; nothing is deleted. An output may
  not contain (or be) one of the command's inputs, and may not sit under a regular file.
* **Locks.** :func:`exclusive_lock` holds an ``fcntl`` lock on a small file next to the output for
  as long as it is written (and removes the file after); a second writer fails at once with
  :class:`~segcore.errors.BusyError` naming the PID that holds it. The kernel drops the lock when
  the holder dies, even by SIGKILL, so a stale lock never blocks anyone.
* **Termination.** :func:`terminate_raises` turns SIGTERM into a :class:`~segcore.errors.Terminated`
  exception in the main thread, so the ``except BaseException`` / ``finally`` cleanups of the
  writers (temporary files, ``.tmp-*`` and empty ``.staging-*`` directories) run before exit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from segcore.errors import BusyError, OutputError, SegcoreError, Terminated

log = logging.getLogger(__name__)

PREDICT_TAG = "SEGCORE_OUTPUT"  # GeoTIFF metadata tag marking a label raster written by segcore predict
PREDICT_TAG_VALUE = "predict-labels"
MOSAIC_TAG_VALUE = "predict-mosaic"  # the same key in a mosaic VRT's dataset metadata
POLYGONS_TAG_VALUE = "predict-polygons"  # ... and in a polygon GeoPackage's dataset metadata


def _json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_shards(d: Path) -> bool:
    m = _json(d / "manifest.json")
    return m is not None and "format" in m and "splits" in m


def _is_export(d: Path) -> bool:
    m = _json(d / "meta.json")
    return m is not None and "format" in m and "arrays" in m


def _is_run(d: Path) -> bool:
    return (d / "config.json").is_file() and any(
        (d / name).exists() for name in ("versions.json", "metrics.jsonl", "checkpoints")
    )


def _is_eval(d: Path) -> bool:
    return (d / "metrics.json").is_file() and any(
        (d / name).exists() for name in ("per_image.csv", "summary.md", "overlays")
    )


def _is_synth(d: Path) -> bool:
    return (d / "manifest.csv").is_file() and (d / "classes.csv").is_file()


# kind -> (how segcore recognises its own output of that kind, what it looks like, for messages)
SIGNATURES: dict[str, tuple[Callable[[Path], bool], str]] = {
    "shards": (_is_shards, "a shard dataset with manifest.json"),
    "export": (_is_export, "an export with meta.json"),
    "run": (_is_run, "a training run directory with config.json"),
    "eval": (_is_eval, "an evaluation report with metrics.json"),
    "synth": (_is_synth, "a synthetic dataset with manifest.csv and classes.csv"),
}


def is_own_dir(path: str | Path, kind: str) -> bool:
    """Whether directory ``path`` is segcore's own output of ``kind`` (a key of :data:`SIGNATURES`)."""
    return Path(path).is_dir() and SIGNATURES[kind][0](Path(path))


def _check_parents(path: Path, what: str, error: type[SegcoreError] = OutputError) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise error(f"{what} {path}: {parent} is a regular file, not a directory; "
                            "choose an output path under a directory")
            return


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
    except (ValueError, OSError):
        return False
    return True


def _sample(entries: list[Path], n: int = 3) -> str:
    names = sorted(p.name for p in entries)
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def claim_output_dir(path: str | Path, kind: str, *, inputs: Iterable[str | Path] = (),
                     what: str = "output directory", error: type[SegcoreError] = OutputError) -> Path:
    """Check that directory ``path`` may be (re)written as segcore output of ``kind``; return it.

    Allowed: a missing path, an empty directory, or segcore's own output of the same kind (which
    the caller replaces atomically). Raises ``error`` (:class:`OutputError` unless the caller's
    family is more telling) for a regular file at ``path`` or above it, a directory holding anything
    else, or an input inside ``path``. Nothing is touched.
    """
    out = Path(path)
    _check_parents(out, what, error)
    for item in inputs:
        if item and _inside(Path(item), out):
            raise error(f"{what} {out} contains the input {item}; writing there would replace it. "
                              "Choose an output outside the inputs")
    if not out.exists():
        return out
    if not out.is_dir():
        raise error(f"{what} {out} exists and is a regular file, not a directory; "
                          "segcore never overwrites what it did not create: choose another path")
    entries = list(out.iterdir())
    if entries and not SIGNATURES[kind][0](out):
        raise error(
            f"{what} {out} exists and is not {SIGNATURES[kind][1]} (it holds {_sample(entries)}); segcore never "
            "deletes or overwrites what it did not create: choose another path or empty it yourself")
    return out


def _is_own_label_raster(path: Path) -> bool:
    import rasterio

    try:
        with rasterio.open(path) as ds:
            return ds.tags().get(PREDICT_TAG) == PREDICT_TAG_VALUE
    except (rasterio.errors.RasterioError, OSError):
        return False


def _is_own_mosaic(path: Path) -> bool:
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return False
    return any(item.get("key") == PREDICT_TAG and item.text == MOSAIC_TAG_VALUE
               for item in root.findall("./Metadata/MDI"))


def _is_own_polygons(path: Path) -> bool:
    try:
        import pyogrio

        meta = pyogrio.read_info(path).get("dataset_metadata") or {}
    except Exception:
        return False
    return meta.get(PREDICT_TAG) == POLYGONS_TAG_VALUE


OWN_FILES: dict[str, tuple[Callable[[Path], bool], str]] = {
    "labels": (_is_own_label_raster, "a label raster written by segcore predict"),
    "mosaic": (_is_own_mosaic, "a mosaic VRT written by segcore predict"),
    "polygons": (_is_own_polygons, "a polygon GeoPackage written by segcore predict"),
}


def claim_output_file(path: str | Path, *, inputs: Iterable[str | Path] = (), what: str = "output",
                      kind: str = "labels") -> Path:
    """Check that file ``path`` may be written by ``segcore predict``; return it.

    Refused: the path of an input (also through links), an existing directory, a path under a
    regular file, an existing file that is not segcore's own output of ``kind`` (:data:`OWN_FILES`:
    a label raster, mosaic VRT or polygon GeoPackage carrying :data:`PREDICT_TAG`) and, for labels,
    an existing ``<stem>.qml`` beside ``path`` unless ``path`` is such a label raster (the style
    ``predict`` writes there). Nothing is touched.
    """
    is_own, description = OWN_FILES[kind]
    out = Path(path)
    _check_parents(out, what)
    for item in inputs:
        src = Path(item)
        same = out.exists() and src.exists() and os.path.samefile(out, src)
        if same or out.resolve() == src.resolve():
            raise OutputError(f"{what} {out} is the input raster {item}; writing labels there would destroy it. "
                              "Choose another output path")
    if out.is_dir():
        raise OutputError(f"{what} {out} is an existing directory; give a file path such as {out / 'labels.tif'}")
    own = out.exists() and is_own(out)
    if out.exists() and not own:
        raise OutputError(f"{what} {out} exists and is not {description}; segcore never overwrites what it "
                          "did not create: choose another path or remove it yourself")
    style = out.with_name(out.stem + ".qml")  # predict writes the QGIS style beside its labels
    if kind == "labels" and style.exists() and not own:
        raise OutputError(f"{what} {out}: {style} exists and was not written with these labels (predict writes "
                          "its QGIS style there); segcore never overwrites what it did not create: choose another "
                          "output name or move that file")
    return out


# ------------------------------------------------------------------------------------------- locks


def _holder(fd: int) -> str:
    """The PID written in a lock file (the holder writes it right after locking)."""
    for _ in range(20):
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 64).decode("ascii", "replace").strip()
        if text:
            return text
        time.sleep(0.01)  # the holder locked but has not written its PID yet
    return "unknown"


@contextlib.contextmanager
def exclusive_lock(lock_path: str | Path, what: str, doing: str = "written", wait: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on ``lock_path`` while the block runs; the file exists only meanwhile.

    Raises :class:`BusyError` at once, naming the holder's PID, when another process holds it;
    with ``wait=True`` blocks in the kernel until the holder releases it (or dies) instead.
    ``what`` names the locked thing in that message (e.g. ``"dataset data/processed/city"``) and
    ``doing`` what its holder does to it (``"built"``: "... is being built by PID 1234").

    The holder removes the file before it unlocks; a process that locked the removed file sees
    that the path no longer names it and starts again, so two holders never coexist. After a
    SIGKILL the file stays (empty or with the dead PID) and is simply locked again by the next run.
    """
    import fcntl  # POSIX; segcore's locks are not implemented on Windows

    path = Path(lock_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise BusyError(f"{what} is being {doing} by PID {holder} (lock {path}); wait for it to finish "
                            "or stop that process, then run again") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed this file while we waited for it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)  # closing the last descriptor releases the lock


def lock_path_for(out: str | Path) -> Path:
    """The lock file of output ``out``: a hidden sibling ``.<name>.lock``."""
    out = Path(out)
    return out.with_name(f".{out.name}.lock")


@contextlib.contextmanager
def replacing_dir(path: str | Path, kind: str, *, inputs: Iterable[str | Path] = (),
                  what: str = "output directory") -> Iterator[Path]:
    """Write a directory output of ``kind`` all at once: yields a temporary sibling to fill.

    ``path`` is claimed first (:func:`claim_output_dir`) and locked (:func:`exclusive_lock`) while
    the block runs. When the block succeeds the temporary directory replaces ``path`` by two renames
    (an earlier output of segcore's is removed only once the new one is in place); when it fails,
    SIGTERM included, the temporary directory is removed and ``path`` is left as it was.
    """
    out = claim_output_dir(path, kind, inputs=inputs, what=what)
    out.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(lock_path_for(out), f"{what} {out}"):
        claim_output_dir(out, kind, inputs=inputs, what=what)
        # Named before it exists, so that a signal landing right after mkdir still finds it to remove.
        tmp = out.with_name(f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        try:
            tmp.mkdir()
            yield tmp
            if out.exists():
                os.replace(out, old)
            os.replace(tmp, out)
        except BaseException:
            if old.exists() and not out.exists():
                os.replace(old, out)  # interrupted between the two renames: the earlier output goes back
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            if out.exists():
                shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------ termination


@contextlib.contextmanager
def terminate_raises(signals: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[None]:
    """Within the block, ``signals`` raise :class:`Terminated` in the main thread; restored after.

    Outside the main thread (where handlers cannot be installed) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


# -------------------------------------------------------------------------------------- cleanup


def remove_staging_leftovers(staging: str | Path) -> None:
    """After a failed or interrupted shard build: drop ``.tmp-*`` shard directories and probe files,
    and the staging directory itself unless it holds completed shards (kept so a re-run resumes).

    Call only while holding the dataset's lock.
    """
    staging = Path(staging)
    if not staging.is_dir():
        return
    complete = False
    for entry in staging.iterdir():
        if entry.name.startswith((".write-probe-", ".manifest.json.tmp-")):
            entry.unlink(missing_ok=True)
        elif entry.is_dir():
            for shard in entry.iterdir():
                if shard.name.startswith(".tmp-"):
                    shutil.rmtree(shard, ignore_errors=True)
                elif (shard / "shard.json").is_file():
                    complete = True
            if not any(entry.iterdir()):
                entry.rmdir()
    if not complete:
        with contextlib.suppress(OSError):
            (staging / "manifest.json").unlink(missing_ok=True)
            staging.rmdir()


def check_staging(staging: str | Path) -> None:
    """OutputError unless an existing staging directory holds only what the shard builder puts there."""
    staging = Path(staging)
    if not staging.is_dir():
        if staging.exists():
            raise OutputError(f"{staging} exists and is a regular file; segcore needs that name for staging its "
                              "shards: move the file away")
        return
    for entry in staging.iterdir():
        own_file = entry.is_file() and (entry.name == "manifest.json" or entry.name.startswith(
            (".write-probe-", ".manifest.json.tmp-")))
        own_dir = entry.is_dir() and all(
            e.is_dir() and e.name.startswith(("shard-", ".tmp-shard-")) for e in entry.iterdir())
        if not (own_file or own_dir):
            raise OutputError(f"{staging} holds {entry.name}, which segcore's shard builder did not write; "
                              "segcore never deletes what it did not create: move it away and run again")


def remove_unused_run_dir(run_dir: str | Path) -> bool:
    """Remove a run directory this command created if training never got going; True when removed.

    Only what training writes before its first step is removed (``config.json``, ``versions.json``,
    an empty ``metrics.jsonl``, an empty ``checkpoints/``); a checkpoint, a logged metric or any
    other file keeps the directory.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return False
    ckpts, metrics = run_dir / "checkpoints", run_dir / "metrics.jsonl"
    if (ckpts.is_dir() and any(ckpts.iterdir())) or (metrics.is_file() and metrics.stat().st_size > 0):
        return False
    known = {"config.json", "versions.json", "metrics.jsonl", "checkpoints"}
    if any(entry.name not in known for entry in run_dir.iterdir()):
        return False
    shutil.rmtree(run_dir)
    log.info("removed %s: the run failed before its first checkpoint", run_dir)
    return True
