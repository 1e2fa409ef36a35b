"""DistributedDataParallel training on 2 CPU processes (gloo) launched with torchrun.

One interrupted run (steps 1-3) and its resumption (steps 4-6), both with 2 processes, against an
uninterrupted 6-step run: parameters agree across ranks after every step, every train tile is
consumed exactly once per epoch across the ranks, only rank 0 writes checkpoints, metrics and
MLflow records, and the resumed run ends with the uninterrupted run's weights.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from scale_support import REPO_ROOT, shard_config

from segcore.checkpoint import load_checkpoint
from segcore.config import Config
from segcore.data.shards import build_shards
from segcore.distributed import CHECKSUMS_ENV, launch_torchrun

pytestmark = pytest.mark.slow

SMALL = {"student.width": 16, "student.groups": 4, "student.embed_dim": 16, "model.embed_dim": 16}
STEPS, HALF, BATCH = 6, 3, 2


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _launch(cfg: Config, run_dir: Path, sums: Path, **kwargs) -> dict[int, list[dict]]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), **{CHECKSUMS_ENV: str(sums)})
    assert launch_torchrun(cfg, run_dir, env=env, **kwargs) == 0
    return {rank: _records(sums / f"rank{rank}.jsonl") for rank in (0, 1)}


@pytest.fixture(scope="module")
def ddp_runs(geotiffs, mlflow_server, tmp_path_factory):
    """Shards of the 3 train scenes (12 tiles of 64 px); runs A (1-3), B (resumed, 4-6), C (1-6)."""
    tmp = tmp_path_factory.mktemp("ddp")
    config = shard_config(geotiffs, tmp / "processed")
    root = Path(build_shards(Config.from_dict(config), progress=False).root)
    cfg = Config.from_dict(config).replace(**SMALL, **{
        "data.source": "shards", "data.patch_sizes": (64,), "train.batch_size": BATCH, "train.steps": STEPS,
        "train.checkpoint_every": HALF, "train.log_every": 1, "train.warmup_steps": 2, "train.nproc": 2})
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server.url  # the torchrun processes inherit it
    try:
        client = MlflowClient()
        run_id = client.create_run(client.create_experiment("ddp-test")).info.run_id
        logger = {"logger": "tasks.tracking:MlflowTrainLogger", "logger_arg": run_id}
        a = _launch(cfg, tmp / "A", tmp / "sums-A", stop_at=HALF, **logger)
        b = _launch(cfg, tmp / "B", tmp / "sums-B", resume=str(tmp / "A" / "checkpoints" / "last.pt"), **logger)
        c = _launch(cfg, tmp / "C", tmp / "sums-C")
        history = client.get_metric_history(run_id, "train/total")
        n_params = len(client.get_run(run_id).data.params)
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    train_tiles = set(pd.concat(pd.read_csv(p) for p in sorted((root / "train").glob("shard-*/index.csv")))["tile_id"])
    return {"tmp": tmp, "a": a, "b": b, "c": c, "history": history, "n_params": n_params, "tiles": train_tiles}


def test_parameters_agree_across_ranks_after_every_step(ddp_runs):
    for name, steps in (("a", [1, 2, 3]), ("b", [4, 5, 6]), ("c", [1, 2, 3, 4, 5, 6])):
        ranks = ddp_runs[name]
        assert [r["step"] for r in ranks[0]] == steps
        assert [r["params_sha256"] for r in ranks[0]] == [r["params_sha256"] for r in ranks[1]], name
        assert len({r["params_sha256"] for r in ranks[0]}) == len(steps)  # every step changed the weights


def test_each_tile_once_per_epoch_across_ranks(ddp_runs):
    tiles = ddp_runs["tiles"]
    assert len(tiles) == 12
    for runs in (("a", "b"), ("c",)):  # the interrupted + resumed pair, and the uninterrupted run
        per_rank = [[tuple(t) for name in runs for r in ddp_runs[name][rank] for t in r["tiles"]] for rank in (0, 1)]
        assert [len(p) for p in per_rank] == [STEPS * BATCH] * 2
        taken = Counter(per_rank[0] + per_rank[1])
        assert max(taken.values()) == 1  # no tile twice in an epoch, on one rank or across ranks
        for epoch in (0, 1):  # 2 ranks x 6 steps x 2 tiles = 2 epochs of 12 tiles
            assert {tile for e, tile in taken if e == epoch} == tiles


def test_only_rank_zero_wrote_checkpoints_metrics_and_mlflow(ddp_runs):
    tmp = ddp_runs["tmp"]
    for name, steps in (("A", [1, 2, 3]), ("B", [4, 5, 6])):
        files = sorted(str(p.relative_to(tmp / name)) for p in (tmp / name).rglob("*") if p.is_file())
        assert files == ["checkpoints/last.pt", "config.json", "fit-result.json", "launch-config.json", "metrics.jsonl",
                         "versions.json"]
        metrics = _records(tmp / name / "metrics.jsonl")
        assert [m["step"] for m in metrics] == steps  # one line per step: rank 1 appended nothing
        ckpt = load_checkpoint(tmp / name / "checkpoints" / "last.pt")
        assert ckpt["step"] == steps[-1]
        result = json.loads((tmp / name / "fit-result.json").read_text())
        assert result["step"] == steps[-1]
        assert result["world_size"] == 2
        assert ckpt["consumed"] == steps[-1] * BATCH
    # Rank 0's losses (metrics.jsonl) are the ones MLflow holds, once per step, resumed run included.
    jsonl = [m["train/total"] for name in "AB" for m in _records(tmp / name / "metrics.jsonl")]
    history = sorted(ddp_runs["history"], key=lambda m: m.step)
    assert [m.step for m in history] == [1, 2, 3, 4, 5, 6]
    assert [m.value for m in history] == pytest.approx(jsonl, rel=1e-6)
    assert ddp_runs["n_params"] > 10
    # The first run's best loss is rank 0's own best (a rank-1 checkpoint would carry rank 1's losses).
    first = load_checkpoint(tmp / "A" / "checkpoints" / "last.pt")
    assert first["best_loss"] == pytest.approx(min(jsonl[:HALF]), rel=1e-6)


def test_resumed_run_ends_with_the_uninterrupted_weights(ddp_runs):
    assert ddp_runs["b"][0][-1]["params_sha256"] == ddp_runs["c"][0][-1]["params_sha256"]
    tmp = ddp_runs["tmp"]
    resumed = load_checkpoint(tmp / "B" / "checkpoints" / "last.pt")
    full = load_checkpoint(tmp / "C" / "checkpoints" / "last.pt")
    assert resumed["step"] == full["step"] == STEPS
    # The resumed processes skipped exactly the tiles run A had consumed, then went on from there.
    for rank in (0, 1):
        skipped = [tuple(t) for t in ddp_runs["b"][rank][0]["skipped"]]
        assert skipped == [tuple(t) for r in ddp_runs["a"][rank] for t in r["tiles"]]
