"""Warm start (``train.init_from``): training starts from a checkpoint's weights at step 0."""

from __future__ import annotations

import pytest
from test_fit import assert_same_weights, tiny_cfg, weights

from segcore.data.batches import InMemoryTiles
from segcore.data.sources import synthetic_samples
from segcore.errors import TrainingError
from segcore.training import fit


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A 3-step run (seed 0) standing in for the champion's checkpoint."""
    cfg = tiny_cfg(steps=3)
    run = fit(cfg, tmp_path_factory.mktemp("champion"), source=InMemoryTiles(synthetic_samples(cfg, seed=0), 0),
              progress=False)
    return run.checkpoint


def test_warm_start_begins_from_the_checkpoint_weights(tmp_path, champion):
    cfg = tiny_cfg("train.seed=7", f"train.init_from={champion}", steps=0)
    start = fit(cfg, tmp_path / "zero", source=InMemoryTiles(synthetic_samples(cfg, seed=1), 0), progress=False)
    assert start.step == 0
    assert_same_weights(weights(start.checkpoint), weights(champion))  # not seed 7's initialisation
    cold = fit(tiny_cfg("train.seed=7", steps=0), tmp_path / "cold",
               source=InMemoryTiles(synthetic_samples(cfg, seed=1), 0), progress=False)
    with pytest.raises(AssertionError):
        assert_same_weights(weights(cold.checkpoint), weights(champion))


def test_warm_start_from_another_architecture_says_what_to_do(tmp_path, champion):
    cfg = tiny_cfg("student.width=16", "student.groups=4", f"train.init_from={champion}", steps=1)
    with pytest.raises(TrainingError, match="do not fit this model config"):
        fit(cfg, tmp_path / "other", source=InMemoryTiles(synthetic_samples(cfg, seed=0), 0), progress=False)
