"""Rule 6: no raw traceback reaches a user. Every subcommand, given bad values, exits with code 2 and
one error line that names the argument or the file (``docs/reliability.md`` lists them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.conftest import segcore_env, snapshot, write_rgb

T = "{tmp}"
PRED = ["predict", "{tif}", f"{T}/out.tif", "--export", "{exp}"]
SHARDS = ["build-shards", "--raster", "{tif}", "--processed-root", f"{T}/p", "--no-progress"]
EVAL = ["eval", "--baseline", "kmeans", "--synthetic"]

# id -> (argv, strings the one error line must contain)
CASES: dict[str, tuple[list[str], list[str]]] = {
    "predict-k-0": ([*PRED, "--k", "0"], ["--k=0", "1..16"]),
    "predict-k-1000": ([*PRED, "--k", "1000"], ["--k=1000", "1..16"]),
    "predict-k-text": ([*PRED, "--k", "many"], ["--k", "many"]),
    "predict-out-under-file": (["predict", "{tif}", "{file}/out.tif", "--export", "{exp}"], ["{file}"]),
    "predict-out-is-directory": (["predict", "{tif}", "{user}", "--export", "{exp}"], ["{user}", "directory"]),
    "predict-out-is-input": (["predict", "{tif}", "{tif}", "--export", "{exp}"], ["{tif}", "input"]),
    "predict-out-user-file": (["predict", "{tif}", "{user}/notes.txt", "--export", "{exp}"], ["notes.txt"]),
    "predict-missing-input": (["predict", f"{T}/none.tif", f"{T}/out.tif", "--export", "{exp}"], ["none.tif"]),
    "predict-missing-export": (["predict", "{tif}", f"{T}/out.tif", "--export", f"{T}/noexp"], ["noexp"]),
    "predict-override-type": (["predict", "{tif}", f"{T}/out.tif", "predict.tile=abc", "--export", "{exp}"],
                              ["predict.tile", "expected int"]),
    "predict-override-range": (["predict", "{tif}", f"{T}/out.tif", "predict.tile=2", "--export", "{exp}"],
                               ["predict.tile=2", "16.."]),
    "predict-override-misplaced": ([*PRED, "predict.tile=256"], ["predict.tile=256", "right after the positional"]),
    "train-seed-negative": (["train", "--seed", "-1", "--run-dir", f"{T}/run"], ["--seed", "0..4294967295"]),
    "train-seed-huge": (["train", "--seed", "99999999999", "--run-dir", f"{T}/run"], ["--seed", "0..4294967295"]),
    "train-seed-override": (["train", "--run-dir", f"{T}/run", "train.seed=-3"], ["train.seed"]),
    "train-steps-negative": (["train", "--steps", "-5", "--run-dir", f"{T}/run"], ["train.steps"]),
    "train-resume-missing": (["train", "--synthetic", "--steps", "1", "--resume", f"{T}/none.pt",
                              "--run-dir", f"{T}/run"], ["none.pt"]),
    "train-run-dir-file": (["train", "--run-dir", "{file}"], ["{file}"]),
    "train-run-dir-user": (["train", "--run-dir", "{user}"], ["{user}"]),
    "train-unknown-key": (["train", "--run-dir", f"{T}/run", "bogus.key=1"], ["bogus.key"]),
    "train-patch-sizes": (["train", "--patch-sizes", "a,b", "--run-dir", f"{T}/run"], ["patch_sizes"]),
    "synth-seed-negative": (["synth", f"{T}/s", "--seed", "-1"], ["--seed", "0..4294967295"]),
    "synth-count-zero": (["synth", f"{T}/s", "--count", "0"], ["--count"]),
    "synth-size-zero": (["synth", f"{T}/s", "--size", "0"], ["--size"]),
    "synth-val-fraction": (["synth", f"{T}/s", "--val-fraction", "2"], ["--val-fraction"]),
    "synth-out-under-file": (["synth", "{file}/s"], ["{file}"]),
    "synth-out-user-dir": (["synth", "{user}"], ["{user}"]),
    "shards-missing-raster": (["build-shards", "--raster", f"{T}/none.tif", "--processed-root", f"{T}/p"],
                              ["none.tif"]),
    "shards-missing-manifest": (["build-shards", "--manifest", f"{T}/none.csv", "--processed-root", f"{T}/p"],
                                ["none.csv"]),
    "shards-dataset-not-a-name": ([*SHARDS, "--dataset", "../x"], ["data.dataset"]),
    "shards-root-under-file": (["build-shards", "--raster", "{tif}", "--processed-root", "{file}/p"], ["{file}"]),
    "shards-dataset-is-user-dir": (["build-shards", "--raster", "{user}/scene.tif", "--processed-root", T,
                                    "--dataset", "mine"], ["{user}"]),
    "shards-tile-size-zero": ([*SHARDS, "--tile-size", "0"], ["data.tile_size"]),
    "shards-min-valid": ([*SHARDS, "--min-valid", "2"], ["data.min_valid"]),
    "shards-workers-negative": ([*SHARDS, "--num-workers", "-1"], ["data.num_workers"]),
    "shards-on-error": ([*SHARDS, "--on-error", "ignore"], ["--on-error"]),
    "eval-no-model": (["eval", "--synthetic", "--out", f"{T}/e"], ["--checkpoint"]),
    "eval-seed-negative": ([*EVAL, "--seed", "-1", "--out", f"{T}/e"], ["--seed", "0..4294967295"]),
    "eval-missing-checkpoint": (["eval", "--checkpoint", f"{T}/none.pt", "--synthetic", "--out", f"{T}/e"],
                                ["none.pt"]),
    "eval-missing-export": (["eval", "--export", f"{T}/noexp", "--synthetic", "--out", f"{T}/e"],
                            ["--export", "noexp", "not an export directory"]),
    "eval-missing-data": (["eval", "--baseline", "kmeans", "--data", f"{T}/none.csv", "--out", f"{T}/e"],
                          ["none.csv"]),
    "eval-out-under-file": ([*EVAL, "--out", "{file}/e"], ["{file}"]),
    "eval-out-user-dir": ([*EVAL, "--out", "{user}"], ["{user}"]),
    "export-missing-checkpoint": (["export", "--checkpoint", f"{T}/none.pt", "--out", f"{T}/x"], ["none.pt"]),
    "export-garbage-checkpoint": (["export", "--checkpoint", "{file}", "--out", f"{T}/x"], ["{file}"]),
    "export-out-under-file": (["export", "--checkpoint", "{file}", "--out", "{file}/x"], ["{file}"]),
    "export-out-user-dir": (["export", "--checkpoint", "{file}", "--out", "{user}"], ["{user}"]),
    "export-bad-metrics": (["export", "--checkpoint", "{file}", "--out", f"{T}/x", "--metrics", "{file}"],
                           ["--metrics"]),
    "export-codebook-k": (["export", "--checkpoint", "{file}", "--out", f"{T}/x", "--codebook-k", "0"],
                          ["--codebook-k", "1..255"]),
    "export-codebook-seed": (["export", "--checkpoint", "{file}", "--out", f"{T}/x", "--codebook-seed", "-2"],
                             ["--codebook-seed", "0..4294967295"]),
    "config-unknown-key": (["config", "bogus.key=1"], ["bogus.key"]),
    "config-missing-file": (["config", "--config", f"{T}/none.yaml"], ["none.yaml"]),
    "config-out-of-range": (["config", "aug.seed=-1"], ["aug.seed"]),
    "unknown-command": (["frobnicate"], ["frobnicate"]),
}


@pytest.fixture
def places(tmp_path: Path, user_dir: Path, export_dir: Path) -> dict[str, str]:
    plain = tmp_path / "plain.txt"
    plain.write_text("a regular file\n")
    return {"tmp": str(tmp_path), "tif": str(write_rgb(tmp_path / "in.tif")), "exp": str(export_dir),
            "file": str(plain), "user": str(user_dir)}


def _error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_value_exits_2_with_one_line(case: str, places, cli, tmp_path: Path, user_dir: Path) -> None:
    argv, expected = CASES[case]
    before, image = snapshot(user_dir), Path(places["tif"]).read_bytes()
    rc, err, _ = cli(*(a.format(**places) for a in argv))
    line = _error_line(err)
    assert rc == 2, err
    for text in expected:
        assert text.format(**places) in line, (text, line)
    assert snapshot(user_dir) == before  # the user's files are untouched
    assert Path(places["tif"]).read_bytes() == image
    assert not (tmp_path / "run").exists()  # no run directory left behind by a failed start
    assert not [p for p in tmp_path.rglob("*") if ".staging-" in p.name or p.name.endswith(".tmp")]


def test_console_script_prints_one_line_not_a_traceback(tmp_path: Path, export_dir: Path) -> None:
    """The same through the real entry point in a child process (argparse and library errors)."""
    image = write_rgb(tmp_path / "in.tif")
    for argv, flag in ((["predict", image, tmp_path / "o.tif", "--export", export_dir, "--k", "0"], "--k=0"),
                       (["synth", tmp_path / "s", "--seed", "-4"], "--seed")):
        out = subprocess.run([sys.executable, "-m", "segcore.cli.main", *map(str, argv)], capture_output=True,
                             text=True, env=segcore_env(), cwd=tmp_path, timeout=300)
        assert out.returncode == 2
        assert "Traceback" not in out.stderr
        assert flag in _error_line(out.stderr)


@pytest.mark.parametrize(("argv", "expected"), [
    (["--steps", "-1"], "--steps"),
    (["--seed", "-1"], "train.seed=-1 is out of range"),
    (["--config-file", "none.yaml"], "none.yaml"),
    (["bogus.key=3"], "bogus"),
])
def test_pipeline_bad_parameters_are_one_line(tmp_path: Path, argv: list[str], expected: str) -> None:
    """``python flows/full_pipeline.py`` checks its parameters before any server starts."""
    from tests.reliability.conftest import REPO

    out = subprocess.run([sys.executable, str(REPO / "flows" / "full_pipeline.py"), "--work-dir", "w", *argv],
                         capture_output=True, text=True, env=segcore_env(), cwd=tmp_path, timeout=300)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert expected in _error_line(out.stderr)
    assert list(tmp_path.iterdir()) == []  # nothing written, no server started


def _latin1_name(directory: Path) -> Path:
    """A valid raster whose file name is Latin-1 bytes (not valid UTF-8); GDAL cannot even open it."""
    path = directory / os.fsdecode(b"sc\xe8ne.tif")
    try:
        os.rename(write_rgb(directory / "tmp.tif", seed=3), path)
    except OSError:
        pytest.skip("this file system does not accept file names that are not UTF-8")
    return path


def test_file_names_that_are_not_utf8(tmp_path: Path, cli) -> None:
    rasters = tmp_path / "rasters"
    write_rgb(rasters / "good.tif", seed=1, height=128, width=128)
    _latin1_name(rasters)
    argv = ["build-shards", "--raster", rasters, "--processed-root", tmp_path / "p", "--dataset", "d",
            "--tile-size", "64", "--no-progress"]
    rc, err, _ = cli(*argv)
    assert rc == 2
    line = _error_line(err)
    assert "sc\\xe8ne.tif" in line
    assert "UTF-8" in line
    assert not (tmp_path / "p" / "d").exists()
    rc, err, out = cli(*argv, "--on-error", "skip")
    assert rc == 0, err
    assert "Traceback" not in err
    assert "failed: " in out  # the build summary lists the file and why
    assert "sc\\xe8ne.tif" in out
    assert "UTF-8" in out
    assert (tmp_path / "p" / "d" / "manifest.json").is_file()
