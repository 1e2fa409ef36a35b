"""Frozen teachers for distillation (training only): interface, FakeTeacher, DINOv2."""

from __future__ import annotations

from segcore.config import Config
from segcore.teachers.base import TEACHER_DIMS, Teacher, teacher_feat_dim
from segcore.teachers.dinov2 import ARCHS, DinoV2Teacher, candidate_paths, load_dinov2
from segcore.teachers.fake import FakeTeacher

TEACHERS = (*ARCHS, "fake")


def build_teacher(cfg: Config) -> Teacher:
    """The teacher named by ``cfg.teacher.name`` (``dinov2_vits14`` | ``dinov2_vitb14`` | ``fake``).

    ``fake`` is a :class:`FakeTeacher` of ``teacher.feat_dim`` channels seeded by ``train.seed``;
    DINOv2 teachers load ``teacher.weights`` or the torch hub cache (see :func:`load_dinov2`).
    """
    t = cfg.teacher
    if t.name == "fake":
        return FakeTeacher(feat_dim=t.feat_dim, seed=cfg.train.seed)
    if t.name in ARCHS:
        return load_dinov2(t.name, t.weights, t.required)
    raise KeyError(f"unknown teacher {t.name!r}; valid teachers: {', '.join(TEACHERS)}")


__all__ = [
    "ARCHS",
    "TEACHERS",
    "TEACHER_DIMS",
    "DinoV2Teacher",
    "FakeTeacher",
    "Teacher",
    "build_teacher",
    "candidate_paths",
    "load_dinov2",
    "teacher_feat_dim",
]
