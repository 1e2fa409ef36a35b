"""Model registry: register an export, look the champion up, record the promotion decision.

The decision itself is :func:`segcore.promotion.decide`; these tasks only read and write the
registry (aliases ``champion`` and ``challenger``, the version's description and tags).
"""

from __future__ import annotations

import math
from typing import Any

from mlflow.exceptions import MlflowException
from prefect import task

from tasks import tracking

CHECKPOINT_TAG = "segcore.checkpoint_uri"
DECISION_TAG = "segcore.promotion"


def register(model_name: str, source: str, run_id: str, metrics: dict[str, float], checkpoint_uri: str = "") -> str:
    """A new version of ``model_name`` pointing at ``source``; its metrics are kept as version tags."""
    c = tracking.client()
    try:
        c.get_registered_model(model_name)
    except MlflowException:
        c.create_registered_model(
            model_name, description="segcore student exports (model.npz, meta.json, metrics.json)"
        )
    tags = {f"metric.{k}": repr(float(v)) for k, v in metrics.items()
            if isinstance(v, int | float) and math.isfinite(v)}
    if checkpoint_uri:
        tags[CHECKPOINT_TAG] = checkpoint_uri
    return c.create_model_version(model_name, source=source, run_id=run_id, tags=tags).version


@task(name="find_champion")
def find_champion(model_name: str) -> dict[str, str]:
    """The version behind the ``champion`` alias: ``version``, ``export_uri`` and ``checkpoint_uri``
    (empty strings when there is no champion yet)."""
    from segcore.promotion import CHAMPION

    try:
        champ = tracking.client().get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return {"version": "", "export_uri": "", "checkpoint_uri": ""}
    return {"version": champ.version, "export_uri": champ.source,
            "checkpoint_uri": champ.tags.get(CHECKPOINT_TAG, "")}


@task(name="promote")
def promote(model_name: str, version: str, metrics: dict[str, float], labelled: bool, eval_set: str,
            champion_version: str = "", champion_error: str = "", margin: float = 0.05) -> dict[str, Any]:
    """Decide on ``version`` from both models' scores on the same set, move the alias it earns, and
    write the decision with both scores into the version's description and its tags."""
    from dataclasses import replace

    from segcore.promotion import CHALLENGER, decide, description
    from tasks.lifecycle import champion_now, registry_lock

    d = decide(metrics, labelled=labelled, margin=margin, eval_set=eval_set,
               champion_version=champion_version or None, champion_error=champion_error)
    c = tracking.client()
    with registry_lock(model_name):  # another pipeline may have moved the alias since this one compared
        now = champion_now(model_name)
        if d.promoted and now != str(champion_version or ""):
            d = replace(d, alias="", reason=f"not promoted: {d.reason}; but champion v{now} was promoted by "
                                            "another run after this comparison: re-run to compare with it")
        if d.alias:
            c.set_registered_model_alias(model_name, d.alias, version)
    c.update_model_version(model_name, version, description=description(d, version))
    for key, value in {DECISION_TAG: d.reason, "segcore.decision": d.outcome, "segcore.decision.metric": d.metric,
                       "segcore.decision.challenger": repr(d.challenger), "segcore.decision.champion":
                       repr(d.champion), "segcore.decision.champion_version": d.champion_version or "",
                       "segcore.decision.margin": repr(d.margin), "segcore.decision.eval_set": eval_set}.items():
        c.set_model_version_tag(model_name, version, key, value)
    champion = version if d.promoted else (champion_version or "")
    return {"promoted": d.promoted, "alias": d.alias, "outcome": d.outcome, "reason": d.reason,
            "champion": champion, "challenger": version if d.alias == CHALLENGER else ""}
