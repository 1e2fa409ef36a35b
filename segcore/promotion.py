"""Champion versus challenger: both scored on the same images, then a decision with its reasons.

:func:`score_pair` evaluates the new model (the challenger) and the current champion on one
:class:`~segcore.evaluate.EvalData`, with one protocol, in one pass over the images (each tile is
read once and segmented by both, and by the baselines: RGB k-means, one label per image). In the pipeline
(:func:`score_on_shards`) both are exports scored the way ``segcore predict`` runs them (codebook,
class prior, region vote: :class:`~segcore.evaluate.ExportPredictor`): the challenger's checkpoint
is exported first, with the codebook the export stage fits, so the scores are those of the maps
users get. :func:`decide` turns the two scores into a :class:`Decision`:

* with labels, the challenger becomes ``champion`` only if its matched mIoU beats the champion's
  by more than ``eval.promote_margin`` (0.05: the spread of mIoU between training seeds measured
  in ``docs/benchmarks.md``; a smaller gain is indistinguishable from re-training noise). The mIoU
  is the one with a single matching of ids to classes for the whole set (``val/dataset/miou``)
  when both models have codebook ids: per-image matching rewards maps with few segments (one
  label per image scores as well as the trained model on real land-cover sets), the single
  matching rewards a legend that holds in every image. Otherwise (an older champion without a
  codebook) the per-image ``val/miou`` of both;
* without labels no label-free criterion has been shown to track mIoU (``docs/benchmarks.md``),
  so the new version is registered as ``challenger`` for a person to promote, never on a guess;
* the first model becomes ``champion`` (there is nothing to compare it with).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segcore.config import Config
from segcore.evaluate import EvalData, evaluate_many

CHAMPION, CHALLENGER = "champion", "challenger"
LABELLED_METRIC = "val/miou"
LEGEND_METRIC = "val/dataset/miou"  # preferred when both models have it (codebook ids)
# Reported beside the decision when there are no labels (not used to decide, see the module docstring).
LABEL_FREE_METRIC = "proxy/two_view_consistency"
CHAMPION_PREFIX = "champion/"


@dataclass(frozen=True)
class Decision:
    """The outcome for one new version: the alias it gets (``""``: none) and why."""

    alias: str
    metric: str
    challenger: float
    champion: float | None
    champion_version: str | None
    margin: float
    labelled: bool
    eval_set: str
    reason: str

    @property
    def promoted(self) -> bool:
        return self.alias == CHAMPION

    @property
    def outcome(self) -> str:
        return {CHAMPION: "promoted", CHALLENGER: "challenger"}.get(self.alias, "kept champion")


def score_pair(challenger: Any, champion: Any | None, data: EvalData, cfg: Config, out_dir: str | Path,
               *, baseline: bool = True) -> dict[str, float]:
    """Evaluate ``challenger`` and ``champion`` (any predictor :func:`~segcore.evaluate.evaluate`
    accepts: a checkpoint, an export directory) on the same ``data``.

    Writes ``out_dir/eval`` (the challenger's report, with overlays), ``out_dir/champion`` and,
    with ``baseline``, ``out_dir/baseline`` (RGB k-means) and ``out_dir/constant`` (one label per
    image). Returns the challenger's flat metrics, the champion's under ``champion/`` and the
    baselines' mIoU / pixel accuracy under ``baseline/kmeans_rgb/`` and ``baseline/constant/``.
    """
    out = Path(out_dir)
    models = [(challenger, out / "eval", cfg.eval.num_overlays)]
    if champion is not None:
        models.append((champion, out / "champion", 0))
    baselines = {"kmeans_rgb": ("kmeans", "baseline"), "constant": ("constant", "constant")} if baseline else {}
    models += [(name, out / folder, 0) for name, folder in baselines.values()]
    results = iter(evaluate_many(models, data, cfg))  # one pass: every tile is read once for all models
    metrics = next(results)
    if champion is not None:
        metrics.update({CHAMPION_PREFIX + k: v for k, v in next(results).items()})
    for key in baselines:
        base = next(results)
        metrics.update({f"baseline/{key}/{k.split('/', 1)[1]}": base[k]
                        for k in ("val/miou", "val/pixel_acc") if k in base})
    return metrics


@dataclass(frozen=True)
class ShardScores:
    """:func:`score_on_shards`'s result: the evaluation set, both models' metrics, and why the
    champion could not be scored (``""`` when it was, or when there is none)."""

    plan: Any  # segcore.eval_plan.EvalPlan
    metrics: dict[str, float]
    champion_error: str


def score_on_shards(root: str | Path, challenger: Any, champion: Any | None, cfg: Config,
                    out_dir: str | Path) -> ShardScores:
    """Pick the evaluation set of the shard dataset at ``root`` (:func:`segcore.eval_plan.plan_evaluation`)
    and :func:`score_pair` both models on it (the RGB k-means baseline too when it is labelled).

    A challenger given as a checkpoint file is exported into ``out_dir/challenger-export`` first,
    with a codebook fitted on the training split of ``root`` (:func:`segcore.export.export_checkpoint`'s
    default request, so the same codebook as the export stage's), and that export is scored.

    A champion whose export cannot be scored (an older export format, a corrupt file) does not
    stop the run: the challenger is scored alone and the error is returned for the decision.
    """
    from segcore.errors import SegcoreError
    from segcore.eval_plan import eval_data, plan_evaluation

    plan = plan_evaluation(root, cfg)
    if isinstance(challenger, str | Path) and Path(challenger).is_file():
        from segcore.codebook import CodebookRequest
        from segcore.export import export_checkpoint

        challenger = export_checkpoint(challenger, Path(out_dir) / "challenger-export",
                                       codebook=CodebookRequest(source=str(root)))
    try:
        metrics = score_pair(challenger, champion, eval_data(root, plan, cfg), cfg, out_dir, baseline=plan.labelled)
        return ShardScores(plan, metrics, "")
    except (SegcoreError, OSError, KeyError, ValueError) as exc:
        if champion is None:
            raise
        error = f"{type(exc).__name__}: {exc}"[:500]
    metrics = score_pair(challenger, None, eval_data(root, plan, cfg), cfg, out_dir, baseline=plan.labelled)
    return ShardScores(plan, metrics, error)


def decide(metrics: dict[str, float], *, labelled: bool, margin: float, eval_set: str,
           champion_version: str | None, champion_error: str = "") -> Decision:
    """The decision for a new version from :func:`score_pair`'s metrics (see the module docstring).

    ``champion_version`` None: there is no champion yet. ``champion_error``: the champion exists
    but could not be scored (its export is unreadable or of another format): register as
    challenger and say so.
    """
    if not labelled:
        metric = LABEL_FREE_METRIC
    elif LEGEND_METRIC in metrics and (champion_version is None or CHAMPION_PREFIX + LEGEND_METRIC in metrics):
        metric = LEGEND_METRIC
    else:
        metric = LABELLED_METRIC
    mine = float(metrics.get(metric, math.nan))
    theirs = metrics.get(CHAMPION_PREFIX + metric)
    theirs = None if theirs is None else float(theirs)

    def made(alias: str, reason: str) -> Decision:
        return Decision(alias, metric, mine, theirs, champion_version, margin, labelled, eval_set, reason)

    if champion_version is None:
        return made(CHAMPION, f"first model: becomes {CHAMPION} ({metric} {_fmt(mine)} on {eval_set})")
    if champion_error:
        return made(CHALLENGER, f"registered as {CHALLENGER}: {CHAMPION} v{champion_version} could not be "
                                f"scored ({champion_error}); promote by hand after review")
    if not labelled:
        return made(CHALLENGER, f"registered as {CHALLENGER}: no labels on {eval_set}, and no label-free "
                                f"criterion has been shown to track mIoU (docs/benchmarks.md); {metric} "
                                f"{_fmt(mine)} vs {CHAMPION} v{champion_version} {_fmt(theirs)} is for "
                                "information only: promote by hand after review")
    if not math.isfinite(mine) or theirs is None or not math.isfinite(theirs):
        return made(CHALLENGER, f"registered as {CHALLENGER}: {metric} missing ({_fmt(mine)} vs {_fmt(theirs)})")
    gain = mine - theirs
    if gain > margin:
        return made(CHAMPION, f"promoted: {metric} {mine:.4f} vs {CHAMPION} v{champion_version} {theirs:.4f} "
                              f"on {eval_set} (gain {gain:+.4f} > margin {margin:.4f})")
    return made("", f"not promoted: {metric} {mine:.4f} vs {CHAMPION} v{champion_version} {theirs:.4f} on "
                    f"{eval_set} (gain {gain:+.4f} <= margin {margin:.4f}, the seed-to-seed spread)")


def description(decision: Decision, version: str) -> str:
    """The model version's description (shown in the registry UI): both scores and the decision."""
    champ = (f"{CHAMPION} v{decision.champion_version}: {_fmt(decision.champion)}"
             if decision.champion_version else f"{CHAMPION}: none yet")
    return (f"Decision: {decision.outcome}. {decision.metric} on {decision.eval_set}: "
            f"v{version} {_fmt(decision.challenger)}, {champ}; margin {decision.margin:.4f}. {decision.reason}.")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"
