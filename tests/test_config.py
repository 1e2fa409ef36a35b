import json

import pytest

from segcore.config import Config, ConfigError, describe, load_config, valid_keys


def test_defaults_match_the_product_spec():
    cfg = Config()
    assert (cfg.model.embed_dim, cfg.model.max_k, cfg.model.temperature) == (96, 16, 0.8)
    # Measured on real imagery at the 2 m working resolution (docs/benchmarks.md, issue 11).
    assert cfg.data.patch_sizes == (192, 256)
    assert (cfg.data.gsd, cfg.data.min_side, cfg.train.steps) == (2.0, 256, 400)
    assert (cfg.predict.region_m, cfg.predict.region_compactness, cfg.predict.prior_rounds) == (300.0, 0.4, 1)
    assert cfg.data.source == "synthetic"
    assert cfg.data.require_slic is True
    assert cfg.data.cache_mode == "none"
    assert cfg.data.raster_paths == ()
    assert (cfg.autoencoder.enabled, cfg.autoencoder.lambda_recon, cfg.autoencoder.blur_sigma) == (True, 0.01, 1.0)
    assert (cfg.student.embed_dim, cfg.student.depth, cfg.student.norm) == (96, 3, "group")
    assert (cfg.distill.cluster_iters, cfg.distill.ema_decay) == (3, 0.9)
    assert cfg.train.multi_scale_mode == "sample_one_scale_per_step"
    assert isinstance(cfg.aug.seed, int)
    assert cfg.teacher.enabled is False


def test_predict_function_defaults_agree_with_the_config():
    import inspect

    from segcore.predict import predict_raster
    from segcore.regions import class_prior, superpixels

    p = Config().predict
    params = inspect.signature(predict_raster).parameters
    assert params["region_compactness"].default == p.region_compactness
    assert params["prior_rounds"].default == p.prior_rounds
    assert inspect.signature(superpixels).parameters["compactness"].default == p.region_compactness
    assert inspect.signature(class_prior).parameters["iters"].default == p.prior_rounds
    with pytest.raises(ConfigError, match="prior_rounds"):
        load_config(overrides=["predict.prior_rounds=-1"])


def test_precedence_file_then_flags_then_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("train:\n  steps: 10\n  lr: 0.5\nmodel:\n  max_k: 8\n")
    cfg = load_config(path, flags={"train.steps": 20}, overrides=["train.steps=30", "model.temperature=0.5"])
    assert cfg.train.steps == 30  # override beats flag beats file
    assert cfg.train.lr == 0.5  # from the file
    assert cfg.model.max_k == 8
    assert cfg.model.temperature == 0.5
    assert load_config(path, flags={"train.steps": 20}).train.steps == 20


def test_json_file_is_accepted(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"data": {"patch_sizes": [128, 256]}}))
    assert load_config(path).data.patch_sizes == (128, 256)


@pytest.mark.parametrize(
    ("override", "needle"),
    [("train.stepz=3", "train.stepz"), ("nosuch.key=1", "nosuch"), ("train.steps=abc", "train.steps")],
)
def test_bad_keys_and_types_name_the_key(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert needle in str(err.value)


def test_unknown_key_lists_the_valid_ones(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("model:\n  embed_dimm: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "model.embed_dim" in str(err.value)
    assert "model.max_k" in str(err.value)
    assert str(path) in str(err.value)


def test_wrong_types_are_rejected():
    with pytest.raises(ConfigError, match=r"model\.max_k"):
        Config().replace(**{"model.max_k": 2.5})
    with pytest.raises(ConfigError, match=r"data\.require_slic"):
        Config().replace(**{"data.require_slic": "yes"})
    with pytest.raises(ConfigError, match=r"data\.source"):
        Config().replace(**{"data.source": "ftp"})


def test_override_parsing_of_lists_and_none():
    cfg = load_config(overrides=["data.patch_sizes=256,512", "train.amp=none", "data.nodata=0", "train.amp=true"])
    assert cfg.data.patch_sizes == (256, 512)
    assert cfg.data.nodata == 0.0
    assert isinstance(cfg.data.nodata, float)
    assert cfg.train.amp is True


def test_json_round_trip_is_exact():
    cfg = load_config(overrides=["data.patch_sizes=128", "data.raster_paths=[a.tif,b.tif]", "train.lr=0.01"])
    again = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert again.hash() == cfg.hash()
    assert Config().hash() != cfg.hash()


def test_describe_covers_every_key():
    rows = describe()
    assert [r[0] for r in rows] == valid_keys()
    assert all(r[2] for r in rows), "every key needs a one-line meaning"


def test_readme_configuration_table_is_current():
    from pathlib import Path

    from segcore.cli.config import reference_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert reference_table() in readme, "README's configuration table is stale: paste `segcore config --table`"
