"""segcore: unsupervised RGB semantic segmentation of aerial and satellite GeoTIFF imagery.

The library is pure: it never imports prefect or mlflow (orchestration lives in ``tasks/`` and
``flows/``), and :mod:`segcore.runtime` runs an exported model with numpy alone.
"""

__version__ = "0.1.0"

from segcore.config import Config, load_config
from segcore.errors import (
    ArtifactError,
    ConfigError,
    RasterError,
    SegcoreError,
    ShardError,
    TrainingError,
)

__all__ = [
    "ArtifactError",
    "Config",
    "ConfigError",
    "RasterError",
    "SegcoreError",
    "ShardError",
    "TrainingError",
    "__version__",
    "load_config",
]
