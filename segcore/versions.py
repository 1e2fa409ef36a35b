"""Versions of the packages that made an artifact, recorded beside every checkpoint and export."""

from __future__ import annotations

import platform
from importlib import metadata

import segcore

_PACKAGES = ("torch", "numpy", "scikit-image", "rasterio", "scipy", "pandas")


def package_versions() -> dict[str, str]:
    """``{"segcore": ..., "python": ..., "torch": ..., ...}`` for what is installed."""
    out = {"segcore": segcore.__version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out
