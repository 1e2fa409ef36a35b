"""MLflow plumbing shared by the stage tasks.

Every stage opens its own run as a child of the pipeline's parent run, by explicit run ids (MLflow's
active run is thread-local, and Prefect runs tasks in worker threads). The tracking URI comes from
the environment (``MLFLOW_TRACKING_URI``; MLflow's default is ``sqlite:///mlflow.db``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from prefect.exceptions import ExternalSignal

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
STAGE_TAG = "segcore.stage"
PARAM_LIMIT = 6000  # MLflow's longest param value
# MLflow 3's UI opens an experiment without this tag in its GenAI view (traces, no runs listed);
# "custom_model_development" makes it open on the runs table (the value the UI's own selector writes).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def client() -> MlflowClient:
    return MlflowClient()


def experiment_id(name: str, artifact_root: str | None = None) -> str:
    """Id of experiment ``name``, created when missing.

    ``artifact_root`` pins where a new experiment stores artifacts when the tracking store is a
    local SQLite file (otherwise they would land under whatever the working directory is).
    """
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if EXPERIMENT_KIND_TAG not in exp.tags:
            c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    location = None
    if artifact_root and c.tracking_uri.startswith("sqlite:"):
        location = Path(artifact_root, name).resolve().as_uri()
    return c.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})


def git_commit() -> str:
    """The current git commit of the source tree, or ``unknown``."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def log_params(run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, str(v)[:PARAM_LIMIT]) for k, v in sorted(params.items())]
    c = client()
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=items[i : i + 100])


def log_metrics(run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    now = int(time.time() * 1000)
    items = [Metric(_key(k), float(v), now, step) for k, v in metrics.items() if _finite(v)]
    if items:
        client().log_batch(run_id, metrics=items)


def set_tags(run_id: str, tags: dict[str, Any]) -> None:
    client().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def _key(name: str) -> str:
    return name.replace("@", "_")


def _finite(v: Any) -> bool:
    try:
        return float(v) == float(v) and abs(float(v)) != float("inf")
    except (TypeError, ValueError):
        return False


@contextmanager
def stage_run(parent_run_id: str, stage: str, tags: dict[str, Any] | None = None) -> Iterator[str]:
    """A child run of ``parent_run_id`` for one stage; FAILED (with the error as a tag) on exception,
    KILLED when a signal or Ctrl-C stopped it (``tasks.lifecycle``).

    Whatever was logged before an error stays logged.
    """
    c = client()
    parent = c.get_run(parent_run_id)
    run = c.create_run(parent.info.experiment_id, run_name=stage,
                       tags={PARENT_TAG: parent_run_id, STAGE_TAG: stage, **(tags or {})})
    run_id = run.info.run_id
    try:
        yield run_id
    except BaseException as exc:
        set_tags(run_id, {"segcore.error": f"{type(exc).__name__}: {exc}"[:5000]})
        # SIGTERM inside a flow run is Prefect's TerminationSignal; Ctrl-C and segcore's Terminated are
        # KeyboardInterrupts: the run was killed, it did not fail.
        killed = isinstance(exc, (KeyboardInterrupt, ExternalSignal))
        c.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED if killed else RunStatus.FAILED))
        raise
    c.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))


def download(run_id: str, artifact_path: str, dst: str | Path | None = None) -> Path:
    """Download one artifact (file or directory) of ``run_id``; returns the local path."""
    import mlflow

    dst = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="segcore-artifacts-"))
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                    dst_path=str(dst)))


def artifact_uri(run_id: str, artifact_path: str) -> str:
    return f"runs:/{run_id}/{artifact_path}"


def fetch(uri: str, dst: str | Path) -> Path:
    """Download the artifact (file or directory) at ``uri`` (``runs:/<run id>/<path>``) into ``dst``."""
    import mlflow

    Path(dst).mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))


def run_of(uri: str) -> str:
    """The run id of a ``runs:/<run id>/<path>`` URI (lineage tags name the producing run)."""
    if not uri.startswith("runs:/"):
        raise ValueError(f"{uri!r} is not a runs:/<run id>/<path> artifact URI")
    return uri[len("runs:/"):].split("/", 1)[0]


def log_dataset_input(run_id: str, record) -> None:
    """Log a :class:`segcore.lineage.DatasetRecord` as the run's training dataset input."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    source = LocalArtifactDatasetSource(Path(record.root).as_uri())
    dataset = MetaDataset(source, name=record.name, digest=record.digest)
    tags = [InputTag("mlflow.data.context", "training"), InputTag("segcore.rasters", str(record.rasters)),
            *(InputTag(f"segcore.tiles.{k}", str(v)) for k, v in sorted(record.tiles.items()))]
    client().log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=tags)])


class MlflowTrainLogger:
    """The :class:`segcore.train_logging.TrainLogger` that writes into one MLflow run."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def log_params(self, params: dict[str, Any]) -> None:
        log_params(self.run_id, params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        log_metrics(self.run_id, metrics, step)

    def log_artifact(self, path: str | Path) -> None:
        client().log_artifact(self.run_id, str(path))


def tracking_summary() -> dict[str, str]:
    uri = client().tracking_uri
    return {"tracking_uri": uri, "ui": _ui_command(uri)}


def _ui_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
