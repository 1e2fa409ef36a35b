"""Rules 3 and 7 with real processes and real signals: a second writer of the same dataset or export
fails at once naming the PID that holds the lock (a kernel lock, released even by SIGKILL), and a
SIGTERM mid-write leaves no temporary files, no ``.tmp-*`` and no half-published output."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from segcore.errors import BusyError
from segcore.safety import lock_path_for
from tests.reliability.conftest import segcore_env, snapshot, start_segcore, write_rgb

HOLD_LOCK = (
    "import sys\n"
    "from segcore.safety import exclusive_lock\n"
    "with exclusive_lock(sys.argv[1], 'test'):\n"
    "    print('locked', flush=True)\n"
    "    sys.stdin.read()\n"
)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen | None, what: str) -> None:
    """Poll ``condition`` while ``proc`` runs (a synchronisation point, not a time limit on segcore)."""
    deadline = time.monotonic() + 600
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the child exited ({proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            if proc is not None:
                proc.kill()
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def hold_lock(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], env=segcore_env(), text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_build_fails_naming_the_pid_and_sigkill_frees_the_lock(tmp_path: Path, cli) -> None:
    scene = write_rgb(tmp_path / "scene.tif", height=128, width=128)
    root = tmp_path / "p" / "d"
    holder = hold_lock(lock_path_for(root))
    try:
        argv = ("build-shards", "--raster", scene, "--processed-root", tmp_path / "p", "--dataset", "d",
                "--tile-size", "64", "--no-progress")
        rc, err, _ = cli(*argv)
        assert rc == 2
        assert f"dataset {root} is being built by PID {holder.pid}" in err
        assert not root.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path_for(root).exists()  # a SIGKILLed holder leaves its lock file ...
    rc, err, _ = cli(*argv)  # ... but the kernel dropped its lock: nothing to clean by hand
    assert rc == 0, err
    assert (root / "manifest.json").is_file()
    assert not lock_path_for(root).exists()


def test_export_lock(tmp_path: Path) -> None:
    import torch

    from segcore.config import Config
    from segcore.export import export_model
    from segcore.models import build_segmenter
    from tests.reliability.conftest import SMALL

    cfg = Config().replace(**SMALL)
    torch.manual_seed(0)
    holder = hold_lock(lock_path_for(tmp_path / "exp"))
    try:
        busy = f"export directory {tmp_path / 'exp'} is being written by PID {holder.pid}"
        with pytest.raises(BusyError, match=busy):
            export_model(build_segmenter(cfg), cfg, tmp_path / "exp")
    finally:
        holder.communicate("")
    assert not (tmp_path / "exp").exists()


def _many_rasters(directory: Path, count: int = 6, side: int = 768) -> Path:
    for i in range(count):
        write_rgb(directory / f"r{i}.tif", height=side, width=side, seed=i)
    return directory


@pytest.mark.slow
def test_two_real_builds_and_sigterm_cleanup_then_resume(tmp_path: Path, cli) -> None:
    """A runs; B (same dataset) fails naming A's PID; SIGTERM stops A leaving only complete shards;
    a re-run resumes from them and publishes."""
    rasters = _many_rasters(tmp_path / "rasters")
    before = snapshot(rasters)
    argv = ("build-shards", "--raster", rasters, "--processed-root", tmp_path / "p", "--dataset", "d",
            "--tile-size", "96", "--tiles-per-shard", "4", "--no-progress", "data.gsd=0")
    staging = tmp_path / "p" / ".staging-d"
    a = start_segcore(*argv, cwd=tmp_path)
    wait_for(lambda: any(staging.glob("*/shard-*/shard.json")), a, "A staged its first shard")
    rc, err, _ = cli(*argv)
    assert rc == 2
    assert f"is being built by PID {a.pid}" in err
    assert a.poll() is None, "A finished before B ran; the build is too small for this machine"
    a.send_signal(signal.SIGTERM)
    _, a_err = a.communicate(timeout=600)
    assert a.returncode == 128 + signal.SIGTERM, a_err
    assert "Traceback" not in a_err
    assert "stopped by signal 15" in a_err
    assert not list(staging.rglob(".tmp-*"))  # half-written shard directories removed
    assert all((d / "shard.json").is_file() for d in staging.glob("*/shard-*"))  # what is left is complete
    assert not (tmp_path / "p" / "d").exists()  # nothing half-published
    rc, err, out = cli(*argv)
    assert rc == 0, err
    assert " reused |" in out
    assert int(out.split(" written, ")[1].split(" reused")[0]) > 0  # the re-run resumed from A's shards
    assert not staging.exists()
    assert snapshot(rasters) == before


def test_sigterm_during_eval_removes_its_temporary_report(tmp_path: Path) -> None:
    out = tmp_path / "e"
    proc = start_segcore("eval", "--baseline", "kmeans", "--synthetic", "--out", out, "eval.synthetic_count=400",
                         "eval.synthetic_size=128", cwd=tmp_path)
    wait_for(lambda: any(tmp_path.glob(".e.*.tmp")), proc, "eval created its temporary report directory")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no report, no temporary directory, no lock file


def test_failed_resume_leaves_no_run_directory(tmp_path: Path, cli) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    rc, err, _ = cli("train", "--synthetic", "--steps", "1", "--resume", bad, "--run-dir", tmp_path / "run",
                     "data.synthetic_count=1", "data.synthetic_size=64", "data.patch_sizes=[64]")
    assert rc == 2
    assert "bad.pt" in err
    assert not (tmp_path / "run").exists()
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == '["bad.pt"]'


# The child sends itself a real SIGTERM at an exact point of export's write: right after its
# temporary directory is created, or between moving the earlier export aside and moving the new one
# in (a timed kill would almost always miss both).
SIGTERM_IN_EXPORT = (
    "import os, signal, sys\n"
    "when = sys.argv.pop(1)\n"
    "real_mkdir, real_replace = os.mkdir, os.replace\n"
    "def mkdir(path, *args, **kwargs):\n"
    "    real_mkdir(path, *args, **kwargs)\n"
    "    if when == 'mkdir' and os.path.basename(path).startswith('.exp.'):\n"
    "        os.kill(os.getpid(), signal.SIGTERM)\n"
    "def replace(src, dst, *args, **kwargs):\n"
    "    real_replace(src, dst, *args, **kwargs)\n"
    "    if when == 'rename' and os.path.basename(dst).startswith('.exp.old-'):\n"
    "        os.kill(os.getpid(), signal.SIGTERM)\n"
    "os.mkdir, os.replace = mkdir, replace\n"
    "from segcore.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.mark.parametrize("when", ["mkdir", "rename"])
def test_sigterm_during_export_keeps_the_earlier_export_and_leaves_nothing(tmp_path: Path, cli, when) -> None:
    rc, err, _ = cli("train", "--synthetic", "--steps", "1", "--run-dir", tmp_path / "run", "--no-progress",
                     "data.synthetic_count=1", "data.synthetic_size=64", "data.patch_sizes=[64]")
    assert rc == 0, err
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    rc, err, _ = cli("export", "--checkpoint", checkpoint, "--out", tmp_path / "exp", "--no-codebook")
    assert rc == 0, err
    before = snapshot(tmp_path / "exp")
    proc = subprocess.run([sys.executable, "-c", SIGTERM_IN_EXPORT, when, "export", "--checkpoint", str(checkpoint),
                           "--out", str(tmp_path / "exp"), "--no-codebook", "--run-id", "second"],
                          cwd=tmp_path, env=segcore_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(tmp_path / "exp") == before  # the earlier export, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", "run"]  # no .exp.*.tmp, .exp.old-*, .exp.lock
