"""Teachers: FakeTeacher determinism, DINOv2 loading from a file or the hub cache, fallback, required."""

from __future__ import annotations

import logging

import pytest
import torch

from segcore.config import Config
from segcore.errors import ArtifactError
from segcore.teachers import DinoV2Teacher, FakeTeacher, build_teacher, load_dinov2, teacher_feat_dim


def test_fake_teacher_is_deterministic_frozen_stride4():
    x = torch.rand(2, 3, 30, 41)
    a, b = FakeTeacher(16, seed=3), FakeTeacher(16, seed=3)
    fa = a(x)
    assert fa.shape == (2, 16, 8, 11)
    torch.testing.assert_close(fa, b(x), rtol=0, atol=0)
    assert not torch.equal(fa, FakeTeacher(16, seed=4)(x))
    assert not fa.requires_grad
    assert all(not p.requires_grad for p in a.parameters())
    assert not a.train().training


def test_dinov2_output_shape_and_pos_embed_identity_at_pretrain_grid():
    t = DinoV2Teacher(embed_dim=24, depth=1, heads=2)
    assert t(torch.rand(1, 3, 60, 90)).shape == (1, 24, 15, 23)
    assert torch.equal(t.interpolated_pos_embed(37, 37), t.pos_embed)
    assert t.interpolated_pos_embed(4, 6).shape == (1, 25, 24)


def test_vits14_loads_from_weights_file_and_matches(tmp_path):
    torch.manual_seed(0)
    ref = DinoV2Teacher.named("dinov2_vits14")
    for p in ref.parameters():  # LayerScale starts at 1e-5; make the blocks matter
        p.data.add_(torch.randn_like(p) * 0.02)
    path = tmp_path / "vits14.pth"
    torch.save(ref.state_dict(), path)
    cfg = Config().replace(**{"teacher.enabled": True, "teacher.weights": str(path), "teacher.required": True})
    teacher = build_teacher(cfg)
    assert isinstance(teacher, DinoV2Teacher)
    assert teacher.feat_dim == teacher_feat_dim(cfg) == 384
    x = torch.rand(1, 3, 56, 70)
    torch.testing.assert_close(teacher(x), ref(x), rtol=0, atol=0)


def test_hub_cache_path_with_tiny_depth(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    torch.manual_seed(1)
    ref = DinoV2Teacher.named("dinov2_vits14", depth=2)
    torch.save(ref.state_dict(), tmp_path / "checkpoints" / "dinov2_vits14_pretrain.pth")
    loaded = load_dinov2("dinov2_vits14", required=True, depth=2)
    x = torch.rand(1, 3, 28, 42)
    torch.testing.assert_close(loaded(x), ref(x), rtol=0, atol=0)
    with pytest.raises(ArtifactError, match="cannot load"):
        load_dinov2("dinov2_vits14", required=True, depth=3)  # architecture mismatch is an error


def test_missing_weights_fall_back_with_warning_or_raise(tmp_path, caplog):
    missing = tmp_path / "nope.pth"
    cfg = Config().replace(
        **{"teacher.enabled": True, "teacher.name": "dinov2_vitb14", "teacher.weights": str(missing)}
    )
    with caplog.at_level(logging.WARNING, logger="segcore.teachers.dinov2"):
        teacher = build_teacher(cfg)
    assert isinstance(teacher, FakeTeacher)
    assert teacher.feat_dim == teacher_feat_dim(cfg) == 768
    assert str(missing) in caplog.text
    with pytest.raises(ArtifactError, match=r"nope\.pth"):
        build_teacher(cfg.replace(**{"teacher.required": True}))


def test_fake_name_and_unknown_name():
    cfg = Config().replace(**{"teacher.name": "fake", "teacher.feat_dim": 12})
    assert build_teacher(cfg).feat_dim == 12
    with pytest.raises(KeyError, match="dinov2_vits14, dinov2_vitb14, fake"):
        build_teacher(Config().replace(**{"teacher.name": "clip"}))
