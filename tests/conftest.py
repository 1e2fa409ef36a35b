"""Session-wide test settings: hermetic Prefect and MLflow, no outside network look-ups.

These environment variables must be set before prefect or mlflow is imported anywhere, so they
live at import time of this root conftest.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_HOME = Path(tempfile.mkdtemp(prefix="segcore-tests-"))
os.environ["PREFECT_HOME"] = str(_HOME / "prefect")
os.environ.pop("PREFECT_API_URL", None)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_UI_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_TO_API_ENABLED"] = "false"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"
os.environ.setdefault("SEGCORE_SHARED_DATA", str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
# Determinism and fairness on a shared 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ["SEGCORE_SHARED_DATA"])
