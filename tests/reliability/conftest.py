"""Fixtures of the reliability tests: small real GeoTIFFs, a real export, a user's directory, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

REPO = Path(__file__).resolve().parents[2]
CRS = "EPSG:32633"
UTM = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 5_000_000.0)
SMALL = {"student.width": 16, "student.groups": 4, "student.embed_dim": 16, "model.embed_dim": 16,
         "model.temperature": 0.1}


def write_rgb(path: Path, height: int = 96, width: int = 128, seed: int = 0, transform: Affine = UTM,
              nodata: float | None = None, data: np.ndarray | None = None, **profile) -> Path:
    """A textured 3-band uint8 GeoTIFF (or ``data`` ``(C, H, W)``) with a CRS and ``transform``."""
    if data is None:
        rng = np.random.default_rng(seed)
        blocks = rng.integers(20, 235, size=(3, height // 16 + 1, width // 16 + 1))
        data = np.kron(blocks, np.ones((1, 16, 16), dtype=np.int64))[:, :height, :width]
        data = np.clip(data + rng.integers(-10, 11, size=data.shape), 1, 255).astype(np.uint8)
    count, height, width = data.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name,
                       crs=CRS, transform=transform, nodata=nodata, **profile) as dst:
        dst.write(data)
    return path


def write_label(path: Path, height: int = 96, width: int = 128, transform: Affine = UTM) -> Path:
    labels = (np.arange(height * width).reshape(1, height, width) // 997 % 4 + 1).astype(np.uint8)
    return write_rgb(path, transform=transform, data=labels)


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """A directory of a user's own files (a raster and a note) that segcore must never touch."""
    d = tmp_path / "mine"
    write_rgb(d / "scene.tif")
    (d / "notes.txt").write_text("my notes\n")
    return d


def snapshot(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` with its bytes (to assert that nothing changed)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> Path:
    """A real export of a small randomly initialised segmenter (max_k 16)."""
    import torch

    from segcore.config import Config
    from segcore.export import export_model
    from segcore.models import build_segmenter

    cfg = Config().replace(**SMALL)
    torch.manual_seed(0)
    return export_model(build_segmenter(cfg), cfg, tmp_path_factory.mktemp("exp") / "export")


@pytest.fixture
def cli(capsys) -> Callable[..., tuple[int, str, str]]:
    """``cli(*argv)`` runs the ``segcore`` console entry point in-process: ``(exit code, stderr, stdout)``."""
    from segcore.cli.main import main

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse errors exit here
            rc = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return rc, captured.err, captured.out

    return run


def segcore_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_segcore(*argv: str, cwd: Path) -> subprocess.Popen:
    """``segcore ARGV`` as a real child process (stderr captured) for the signal tests."""
    return subprocess.Popen([sys.executable, "-m", "segcore.cli.main", *map(str, argv)], cwd=cwd, env=segcore_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
