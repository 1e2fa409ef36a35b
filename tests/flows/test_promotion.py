"""The promotion decision (pure) and the registry task that records it (real MLflow store)."""

from __future__ import annotations

import math

import pytest
from mlflow import MlflowClient

from segcore.promotion import CHALLENGER, CHAMPION, decide, description

LABELLED = dict(labelled=True, margin=0.05, eval_set="check (labelled)")


@pytest.mark.parametrize(("mine", "theirs", "alias"), [
    (0.46, 0.40, CHAMPION),  # gain 0.06 > margin
    (0.44, 0.40, ""),  # gain 0.04: within the seed spread, champion kept
    (0.45, 0.40, ""),  # gain exactly the margin is not enough
    (0.30, 0.40, ""),
])
def test_labelled_decision_needs_a_gain_above_the_margin(mine, theirs, alias):
    d = decide({"val/miou": mine, "champion/val/miou": theirs}, champion_version="3", **LABELLED)
    assert d.alias == alias
    assert (d.challenger, d.champion) == (mine, theirs)
    text = description(d, "4")
    assert f"v4 {mine:.4f}" in text
    assert f"champion v3: {theirs:.4f}" in text
    assert "margin 0.0500" in text


def test_the_legend_miou_decides_when_both_models_have_codebook_ids():
    # Per image the challenger gains 0.10, but its ids agree less across images: not promoted.
    both = {"val/miou": 0.55, "champion/val/miou": 0.45, "val/dataset/miou": 0.25, "champion/val/dataset/miou": 0.28}
    d = decide(both, champion_version="3", **LABELLED)
    assert (d.metric, d.alias) == ("val/dataset/miou", "")
    assert "val/dataset/miou 0.2500" in d.reason
    better = {**both, "val/dataset/miou": 0.34}
    assert decide(better, champion_version="3", **LABELLED).alias == CHAMPION
    # An older champion without a codebook has no legend score: both are compared per image.
    older = {k: v for k, v in both.items() if k != "champion/val/dataset/miou"}
    d = decide(older, champion_version="3", **LABELLED)
    assert (d.metric, d.alias) == ("val/miou", CHAMPION)
    first = decide({"val/miou": 0.5, "val/dataset/miou": 0.3}, champion_version=None, **LABELLED)
    assert (first.metric, first.alias) == ("val/dataset/miou", CHAMPION)


def test_first_model_is_champion_and_unlabelled_is_challenger():
    first = decide({"val/miou": math.nan}, labelled=False, margin=0.05, eval_set="train", champion_version=None)
    assert first.alias == CHAMPION
    assert "first model" in first.reason
    later = decide({"proxy/two_view_consistency": 0.9, "champion/proxy/two_view_consistency": 0.5},
                   labelled=False, margin=0.05, eval_set="train", champion_version="1")
    assert later.alias == CHALLENGER  # a better proxy is no reason to promote: it is not shown to track mIoU
    assert "no label-free criterion" in later.reason
    assert "0.9000" in description(later, "2")
    assert "0.5000" in description(later, "2")


def test_unscorable_champion_gives_a_challenger():
    d = decide({"val/miou": 0.9}, champion_version="2", champion_error="ArtifactError: old format", **LABELLED)
    assert d.alias == CHALLENGER
    assert "could not be scored" in d.reason


def test_promote_task_moves_aliases_and_writes_the_description(orchestration):
    from tasks.registry import promote, register

    client = MlflowClient()
    run_id = client.create_run(client.create_experiment("promotion-test")).info.run_id
    v1 = register("promo-model", f"runs:/{run_id}/export", run_id, {"val/miou": 0.40})
    assert promote.fn("promo-model", v1, {"val/miou": 0.40}, True, "val (labelled)")["promoted"]
    v2 = register("promo-model", f"runs:/{run_id}/export", run_id, {"val/miou": 0.43})
    kept = promote.fn("promo-model", v2, {"val/miou": 0.43, "champion/val/miou": 0.40}, True, "val (labelled)", v1)
    assert not kept["promoted"]
    assert client.get_model_version_by_alias("promo-model", "champion").version == v1
    version = client.get_model_version("promo-model", v2)
    assert version.description.startswith("Decision: kept champion. val/miou on val (labelled): v2 0.4300, "
                                          "champion v1: 0.4000; margin 0.0500.")
    assert version.tags["segcore.promotion"].startswith("not promoted")
    v3 = register("promo-model", f"runs:/{run_id}/export", run_id, {"val/miou": 0.50})
    assert promote.fn("promo-model", v3, {"val/miou": 0.50, "champion/val/miou": 0.40}, True, "val", v1)["promoted"]
    assert client.get_model_version_by_alias("promo-model", "champion").version == v3
    v4 = register("promo-model", f"runs:/{run_id}/export", run_id, {})
    out = promote.fn("promo-model", v4, {"proxy/two_view_consistency": 0.8,
                                         "champion/proxy/two_view_consistency": 0.7}, False, "train", v3)
    assert out["alias"] == CHALLENGER
    assert client.get_model_version_by_alias("promo-model", "challenger").version == v4
    assert client.get_model_version_by_alias("promo-model", "champion").version == v3


@pytest.fixture(scope="module")
def shards_and_checkpoint(tmp_path_factory):
    """Shards of 3 labelled synthetic scenes (train + check) and a 2-step checkpoint trained on them."""
    from segcore.config import load_config
    from segcore.data.shards import build_shards
    from segcore.data.synthetic import write_synthetic_dataset
    from segcore.training import fit

    tmp = tmp_path_factory.mktemp("pair")
    data = write_synthetic_dataset(tmp / "scenes", count=3, size=128, seed=3)
    rows = (data / "manifest.csv").read_text().splitlines()
    manifest = data / "check.csv"
    manifest.write_text("\n".join([rows[0], *[r.rsplit(",", 1)[0] + ",train" for r in rows[1:3]],
                                   rows[3].rsplit(",", 1)[0] + ",check"]) + "\n")
    cfg = load_config(overrides=[f"data.manifest={manifest}", f"data.processed_root={tmp / 'processed'}",
                                 "data.dataset=pair", "data.tile_size=128", "data.slic_region_size=16",
                                 "data.source=shards", "data.patch_sizes=64", "train.steps=2", "train.batch_size=2",
                                 "eval.num_overlays=0"])
    root = build_shards(cfg, progress=False).root
    run = fit(cfg, tmp / "run", progress=False)
    return cfg, root, run.checkpoint


def test_challenger_and_champion_scored_on_the_same_check_tiles(shards_and_checkpoint, tmp_path):
    from segcore.codebook import CodebookRequest
    from segcore.export import export_checkpoint
    from segcore.promotion import score_on_shards

    cfg, root, checkpoint = shards_and_checkpoint
    champion = export_checkpoint(checkpoint, tmp_path / "export", codebook=CodebookRequest(source=str(root)))
    scored = score_on_shards(root, checkpoint, champion, cfg, tmp_path / "out")
    assert scored.plan.split == "check"
    assert scored.plan.labelled
    assert scored.champion_error == ""
    m = scored.metrics
    assert m["val/images"] == m["champion/val/images"] == 1
    # The challenger's checkpoint is exported with the export stage's codebook and scored as
    # segcore predict runs it: the same weights exported by hand score exactly the same.
    assert (tmp_path / "out" / "challenger-export" / "codebook.npz").is_file()
    for key in ("val/miou", "val/pixel_acc", "val/dataset/miou", "val/k"):
        assert m[f"champion/{key}"] == m[key], key
    assert "baseline/kmeans_rgb/miou" in m
    assert 0.0 < m["baseline/constant/miou"] <= 1.0
    # An older champion without a codebook is scored as predict runs it: prototypes per tile, no legend.
    older = export_checkpoint(checkpoint, tmp_path / "older", codebook=None)
    m = score_on_shards(root, checkpoint, older, cfg, tmp_path / "out2").metrics
    assert "champion/val/miou" in m
    assert "champion/val/dataset/miou" not in m


def test_an_unreadable_champion_export_is_reported_not_fatal(shards_and_checkpoint, tmp_path):
    from segcore.promotion import score_on_shards

    cfg, root, checkpoint = shards_and_checkpoint
    broken = tmp_path / "broken-export"
    broken.mkdir()
    (broken / "meta.json").write_text("{not json")
    scored = score_on_shards(root, checkpoint, broken, cfg, tmp_path / "out")
    assert scored.champion_error
    assert "val/miou" in scored.metrics
    assert not any(k.startswith("champion/") for k in scored.metrics)


def test_challenger_champion_and_baseline_share_one_read_of_every_tile(shards_and_checkpoint, tmp_path, monkeypatch):
    # One pass: each evaluation tile is read (decoded from its shard) once and segmented by every model.
    import segcore.eval_plan as eval_plan
    from segcore.export import export_checkpoint
    from segcore.promotion import score_on_shards

    cfg, root, checkpoint = shards_and_checkpoint
    champion = export_checkpoint(checkpoint, tmp_path / "export", codebook=None)
    reads = []
    real = eval_plan.eval_data

    def counted(*args, **kwargs):
        data = real(*args, **kwargs)

        def images():
            for item in data.images():
                reads.append(item.name)
                yield item

        return type(data)(data.name, data.num_classes, images)

    monkeypatch.setattr(eval_plan, "eval_data", counted)
    scored = score_on_shards(root, checkpoint, champion, cfg, tmp_path / "out")
    assert scored.metrics["val/images"] == scored.metrics["champion/val/images"] == 1
    assert "baseline/kmeans_rgb/miou" in scored.metrics
    assert len(reads) == len(set(reads)) == 1
    for part in ("eval", "champion", "baseline", "constant"):
        assert (tmp_path / "out" / part / "per_image.csv").read_text().count("\n") == 2  # header + the one tile
