"""Rule 1: segcore never deletes or overwrites what it did not create; its own outputs are replaced
whole (a temporary sibling renamed into place), never left half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from segcore.config import Config
from segcore.errors import OutputError
from segcore.export import export_model
from segcore.models import build_segmenter
from segcore.safety import claim_output_dir
from tests.reliability.conftest import SMALL, snapshot, write_rgb

SHARDS = ("--tile-size", "64", "--no-progress", "data.gsd=0")


def _leftovers(root: Path) -> list[str]:
    """Temporary, staging, trash or backup entries segcore left under ``root``."""
    marks = (".staging-", ".trash-", ".tmp", ".old-")
    return sorted(p.name for p in root.rglob("*") if any(m in p.name for m in marks))


def test_build_shards_keeps_a_users_directory_and_the_raster_it_reads(tmp_path: Path, cli) -> None:
    """The issue's example: the dataset directory already holds the user's files, input included."""
    victim = tmp_path / "victim"
    scene = write_rgb(victim / "mydata" / "scene.tif", height=128, width=128)
    (victim / "mydata" / "notes.txt").write_text("mine\n")
    before = snapshot(victim)
    rc, err, _ = cli("build-shards", "--processed-root", victim, "--dataset", "mydata", "--raster", scene, *SHARDS)
    assert rc == 2
    assert str(victim / "mydata") in err
    assert "did not create" in err
    assert snapshot(victim) == before  # nothing deleted, nothing added (no staging, no lock file)


def test_build_shards_refuses_an_input_inside_its_own_dataset(tmp_path: Path, cli) -> None:
    scene = write_rgb(tmp_path / "scene.tif", height=128, width=128)
    assert cli("build-shards", "--processed-root", tmp_path / "p", "--raster", scene, *SHARDS)[0] == 0
    tile = next((tmp_path / "p" / "default").rglob("*.rgb.tif"))
    before = snapshot(tmp_path / "p")
    rc, err, _ = cli("build-shards", "--processed-root", tmp_path / "p", "--raster", tile, *SHARDS)
    assert rc == 2
    assert "contains the input" in err
    assert snapshot(tmp_path / "p") == before


def test_build_shards_replaces_its_own_dataset(tmp_path: Path, cli) -> None:
    scene = write_rgb(tmp_path / "scene.tif", height=128, width=128)
    root = tmp_path / "p" / "default"
    assert cli("build-shards", "--processed-root", tmp_path / "p", "--raster", scene, *SHARDS)[0] == 0
    rc, err, _ = cli("build-shards", "--processed-root", tmp_path / "p", "--raster", scene, *SHARDS,
                     "data.min_valid=0.25")
    assert rc == 0, err
    assert json.loads((root / "manifest.json").read_text())["config"]["data"]["min_valid"] == 0.25
    assert _leftovers(tmp_path / "p") == []


def test_a_failed_build_leaves_no_staging_directory(tmp_path: Path, cli) -> None:
    bad = tmp_path / "broken.tif"
    bad.write_text("not a raster\n")
    rc, err, _ = cli("build-shards", "--processed-root", tmp_path / "p", "--raster", bad, *SHARDS)
    assert rc == 2
    assert "broken.tif" in err
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / "p" / "default").exists()


def _export(out: Path, tag: int) -> Path:
    cfg = Config().replace(**SMALL)
    torch.manual_seed(tag)
    return export_model(build_segmenter(cfg), cfg, out, metrics={"tag": tag})


def test_export_refuses_a_users_directory_and_replaces_its_own(tmp_path: Path, user_dir: Path) -> None:
    before = snapshot(user_dir)
    with pytest.raises(OutputError, match="is not an export"):
        _export(user_dir, 1)
    assert snapshot(user_dir) == before
    _export(tmp_path / "exp", 1)
    _export(tmp_path / "exp", 2)
    assert json.loads((tmp_path / "exp" / "metrics.json").read_text()) == {"tag": 2}
    assert _leftovers(tmp_path) == []


def test_synth_refuses_a_users_directory_and_replaces_its_own(tmp_path: Path, user_dir: Path, cli) -> None:
    before = snapshot(user_dir)
    rc, err, _ = cli("synth", user_dir, "--count", "2", "--size", "64")
    assert rc == 2
    assert str(user_dir) in err
    assert snapshot(user_dir) == before
    out = tmp_path / "synth"
    assert cli("synth", out, "--count", "2", "--size", "64", "--seed", "0")[0] == 0
    first = snapshot(out)
    assert cli("synth", out, "--count", "3", "--size", "64", "--seed", "7")[0] == 0
    assert snapshot(out) != first
    assert len((out / "manifest.csv").read_text().splitlines()) == 4  # header + 3 scenes, nothing stale
    assert _leftovers(tmp_path) == []


def test_eval_replaces_its_own_report(tmp_path: Path, cli) -> None:
    args = ("eval", "--baseline", "kmeans", "--synthetic", "--out", tmp_path / "e", "eval.synthetic_count=1",
            "eval.synthetic_size=64")
    assert cli(*args)[0] == 0
    assert cli(*args)[0] == 0
    assert (tmp_path / "e" / "metrics.json").is_file()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["shards", "export", "run", "eval", "synth"])
def test_every_kind_refuses_foreign_content_and_accepts_empty(tmp_path: Path, user_dir: Path, kind: str) -> None:
    with pytest.raises(OutputError, match="did not create"):
        claim_output_dir(user_dir, kind)
    (tmp_path / "empty").mkdir()
    assert claim_output_dir(tmp_path / "empty", kind) == tmp_path / "empty"
    assert claim_output_dir(tmp_path / "new", kind) == tmp_path / "new"
