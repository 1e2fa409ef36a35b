"""Device and mixed-precision policy.

``auto`` picks CUDA, then MPS, then the CPU. Autocast is on for CUDA by default (bfloat16 where the
card supports it, else float16 with a gradient scaler), off for MPS, and on the CPU only when asked
(``train.amp=true``), where it uses bfloat16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from segcore.errors import ConfigError


@dataclass(frozen=True)
class Placement:
    """Where each part runs and how autocast is set up."""

    student: torch.device
    teacher: torch.device
    amp_dtype: torch.dtype | None  # None: full precision
    use_scaler: bool  # float16 on CUDA needs a GradScaler; bfloat16 does not

    @property
    def autocast_device(self) -> str:
        return self.student.type


def resolve_device(name: str) -> torch.device:
    """``auto | cpu | cuda | cuda:N | mps`` to a device, with a clear error when unavailable."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available here; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"train.device={name!r} but MPS is not available here; use --device cpu or auto")
    return device


def plan_placement(device_name: str, amp: bool | None, with_teacher: bool) -> Placement:
    """Decide devices and autocast for one training process.

    With two or more CUDA devices and a teacher, the teacher runs on ``cuda:0`` and the student
    and backward pass on ``cuda:1`` (single process; for data parallelism use ``train.nproc``).
    """
    device = resolve_device(device_name)
    teacher_device = device
    if device.type == "cuda" and with_teacher and torch.cuda.device_count() >= 2 and device.index is None:
        teacher_device, device = torch.device("cuda:0"), torch.device("cuda:1")
    if device.type == "cuda":
        enabled = True if amp is None else amp
        bf16 = torch.cuda.is_bf16_supported()
        dtype = (torch.bfloat16 if bf16 else torch.float16) if enabled else None
        return Placement(device, teacher_device, dtype, use_scaler=enabled and not bf16)
    if device.type == "mps":
        return Placement(device, teacher_device, None, use_scaler=False)
    return Placement(device, teacher_device, torch.bfloat16 if amp else None, use_scaler=False)
