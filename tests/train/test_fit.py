"""The training loop: determinism, exact resume, label-blindness, AMP on CPU, non-finite guard."""

from __future__ import annotations

import json

import pytest
import torch

from segcore.checkpoint import load_checkpoint
from segcore.config import load_config
from segcore.data.batches import InMemoryTiles
from segcore.data.sources import synthetic_samples
from segcore.errors import TrainingError
from segcore.train import fit

TINY = ["data.synthetic_count=2", "data.synthetic_size=96", "data.patch_sizes=48,64", "train.batch_size=2",
        "data.slic_region_size=12", "train.log_every=1", "train.warmup_steps=2"]


def tiny_cfg(*extra: str, steps: int = 4):
    return load_config(flags={"train.steps": steps}, overrides=[*TINY, *extra])


@pytest.fixture(scope="module")
def samples():
    return synthetic_samples(tiny_cfg(), seed=0)


def weights(path):
    return load_checkpoint(path)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{key} differs")


def test_same_seed_same_losses_and_weights(tmp_path, samples):
    cfg = tiny_cfg()
    r1 = fit(cfg, tmp_path / "a", source=InMemoryTiles(samples, 0), progress=False)
    r2 = fit(cfg, tmp_path / "b", source=InMemoryTiles(samples, 0), progress=False)
    lines_a = (tmp_path / "a" / "metrics.jsonl").read_text()
    assert lines_a == (tmp_path / "b" / "metrics.jsonl").read_text()
    assert len(lines_a.splitlines()) == 4
    assert_same_weights(weights(r1.checkpoint), weights(r2.checkpoint))
    other = fit(tiny_cfg("train.seed=1", "aug.seed=1"), tmp_path / "c", source=InMemoryTiles(samples, 1),
                progress=False)
    assert (tmp_path / "c" / "metrics.jsonl").read_text() != lines_a
    assert other.step == 4


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, samples):
    cfg = tiny_cfg("train.checkpoint_every=2", steps=5)
    full = fit(cfg, tmp_path / "full", source=InMemoryTiles(samples, 0), progress=False)
    part = fit(cfg, tmp_path / "part", source=InMemoryTiles(samples, 0), progress=False, stop_at=3)
    assert load_checkpoint(part.checkpoint)["step"] == 3
    resumed = fit(cfg, tmp_path / "part", source=InMemoryTiles(samples, 0), progress=False, resume=part.checkpoint)
    assert resumed.step == 5
    assert_same_weights(weights(full.checkpoint), weights(resumed.checkpoint))
    full_state, resumed_state = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    for key in full_state["optimizer"]["state"]:
        torch.testing.assert_close(full_state["optimizer"]["state"][key]["exp_avg"],
                                   resumed_state["optimizer"]["state"][key]["exp_avg"], rtol=0, atol=0)
    # The resumed run's metrics file continues where the interrupted one stopped.
    steps = [json.loads(line)["step"] for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    assert (tmp_path / "full" / "metrics.jsonl").read_text() == (tmp_path / "part" / "metrics.jsonl").read_text()


def test_targets_never_reach_the_loss(tmp_path, samples):
    scrambled = []
    gen = torch.Generator().manual_seed(5)
    for s in samples:
        t = dict(s)
        t["target"] = torch.randint(0, 7, s["target"].shape, generator=gen)
        scrambled.append(t)
    cfg = tiny_cfg()
    a = fit(cfg, tmp_path / "a", source=InMemoryTiles(samples, 0), progress=False)
    b = fit(cfg, tmp_path / "b", source=InMemoryTiles(scrambled, 0), progress=False)
    assert_same_weights(weights(a.checkpoint), weights(b.checkpoint))


def test_checkpoint_records_config_versions_and_rng(tmp_path, samples):
    cfg = tiny_cfg(steps=2)
    result = fit(cfg, tmp_path / "run", source=InMemoryTiles(samples, 0), progress=False)
    state = load_checkpoint(result.checkpoint)
    assert state["config"] == cfg.to_dict()
    assert state["versions"]["torch"] == torch.__version__
    assert state["versions"]["torch_threads"] == torch.get_num_threads() >= 1  # it orders the float sums
    assert json.loads((tmp_path / "run" / "versions.json").read_text())["torch_threads"] == torch.get_num_threads()
    assert {"model", "decoder", "loss", "optimizer", "scheduler", "rng", "step", "best_loss"} <= state.keys()
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == cfg.to_dict()


def test_cpu_bf16_autocast_trains(tmp_path, samples):
    cfg = tiny_cfg("train.amp=true", steps=2)
    result = fit(cfg, tmp_path / "amp", source=InMemoryTiles(samples, 0), progress=False)
    assert result.step == 2
    assert torch.isfinite(torch.tensor(result.last_terms["total"]))


def test_disable_autoencoder_drops_decoder_and_recon_terms(tmp_path, samples):
    cfg = tiny_cfg("autoencoder.enabled=false", steps=1)
    result = fit(cfg, tmp_path / "noae", source=InMemoryTiles(samples, 0), progress=False)
    assert "recon" not in result.last_terms
    assert load_checkpoint(result.checkpoint)["decoder"] is None
    with_ae = fit(tiny_cfg(steps=1), tmp_path / "ae", source=InMemoryTiles(samples, 0), progress=False)
    assert "recon" in with_ae.last_terms


def test_non_finite_loss_names_step_and_term_and_keeps_last_checkpoint(tmp_path, samples):
    cfg = tiny_cfg("train.checkpoint_every=2", steps=6)
    poisoned = [dict(s) for s in samples]
    good = fit(cfg, tmp_path / "run", source=InMemoryTiles(samples, 0), progress=False, stop_at=2)
    before = weights(good.checkpoint)
    for s in poisoned:
        s["image"] = torch.full_like(s["image"], float("nan"))
    with pytest.raises(TrainingError, match=r"non-finite loss at step 2: term '\w+'"):
        fit(cfg, tmp_path / "run", source=InMemoryTiles(poisoned, 0), progress=False, resume=good.checkpoint)
    assert_same_weights(before, weights(tmp_path / "run" / "checkpoints" / "last.pt"))


def test_cli_runs_on_synthetic_data(tmp_path):
    from segcore.train import main

    assert main(["--synthetic", "--steps", "2", "--seed", "123", "--run-dir", str(tmp_path / "cli"), "--no-progress",
                 *TINY]) == 0
    assert (tmp_path / "cli" / "checkpoints" / "last.pt").is_file()
    assert len((tmp_path / "cli" / "metrics.jsonl").read_text().splitlines()) == 2
