"""Model registry: register an export, and move the ``champion`` alias only on improvement."""

from __future__ import annotations

import math
from typing import Any

from mlflow.exceptions import MlflowException
from prefect import task

from tasks import tracking

CHAMPION = "champion"
IMPROVEMENT = 1e-9  # a re-run that reproduces the champion's score exactly is not an improvement


def register(model_name: str, source: str, run_id: str, metrics: dict[str, float]) -> str:
    """A new version of ``model_name`` pointing at ``source``; its metrics are kept as version tags."""
    c = tracking.client()
    try:
        c.get_registered_model(model_name)
    except MlflowException:
        c.create_registered_model(
            model_name, description="segcore student exports (model.npz, meta.json, metrics.json)"
        )
    tags = {f"metric.{k}": repr(float(v)) for k, v in metrics.items() if math.isfinite(v)}
    return c.create_model_version(model_name, source=source, run_id=run_id, tags=tags).version


@task(name="promote")
def promote(model_name: str, version: str, metric: str, value: float) -> dict[str, Any]:
    """Point ``champion`` at ``version`` if it beats the current champion on ``metric`` (higher is better).

    The first version becomes champion. The decision and its reason are recorded on the version.
    """
    c = tracking.client()
    try:
        champ = c.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        champ = None
    if champ is None:
        promoted, reason = True, f"first model: becomes {CHAMPION} with {metric}={value:.4f}"
    else:
        best = float(champ.tags.get(f"metric.{metric}", "nan"))
        if not math.isfinite(value):
            promoted, reason = False, f"not promoted: {metric} is not available for this version"
        elif not math.isfinite(best) or value > best + IMPROVEMENT:
            promoted, reason = True, f"promoted: {metric}={value:.4f} beats {CHAMPION} v{champ.version} ({best:.4f})"
        else:
            promoted, reason = (
                False,
                f"not promoted: {metric}={value:.4f} does not beat {CHAMPION} v{champ.version} ({best:.4f})",
            )
    if promoted:
        c.set_registered_model_alias(model_name, CHAMPION, version)
    c.set_model_version_tag(model_name, version, "segcore.promotion", reason)
    return {"promoted": promoted, "reason": reason, "champion": version if promoted else champ.version}
