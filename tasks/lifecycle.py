"""Truthful lineage when a pipeline is stopped or killed (``docs/reliability.md``, rule 2).

* **SIGTERM / SIGINT.** :func:`signals_raise` turns them into
  :class:`segcore.errors.Terminated` in the main thread (while a flow run is active, Prefect's own
  handler turns SIGTERM into its ``TerminationSignal`` instead). The flow's ``except`` marks the
  parent run, and :func:`tasks.tracking.stage_run` the active stage run, ``KILLED`` (MLflow's own
  status, :func:`status_for`) before the exception leaves; the process then exits normally, so
  Prefect's temporary API server (a uvicorn child process) is stopped by Prefect's exit handler.
* **SIGKILL.** Nothing runs in a killed process, so the parent run stays ``RUNNING``. The parent
  run carries who owns it (:func:`owner_tags`: host name, PID and that process's start time, so a
  reused PID is not mistaken for the owner). The next pipeline on the same tracking store calls
  :func:`mark_stale_runs`: every ``RUNNING`` parent run of the experiment owned by a process of this
  host that no longer exists is marked ``KILLED`` with a ``segcore.killed_reason`` tag, and so are
  its ``RUNNING`` stage runs; the new run's summary lists them. Runs owned by another host are
  left alone (their process cannot be checked from here).
* **Resume.** The train stage of the next run continues from the last checkpoint of the latest
  KILLED train run whose config and dataset are unchanged (:func:`resumable_checkpoint`) instead
  of starting at step 0, and records ``segcore.resumed_from`` (that run's id) and
  ``segcore.resumed_step`` on its MLflow run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from mlflow.entities import RunStatus
from prefect import task
from prefect.exceptions import ExternalSignal

from tasks import tracking

PID_TAG, HOST_TAG, START_TAG = "segcore.pid", "segcore.host", "segcore.pid_start"
REASON_TAG = "segcore.killed_reason"
KILLED = RunStatus.to_string(RunStatus.KILLED)
FAILED = RunStatus.to_string(RunStatus.FAILED)


def status_for(exc: BaseException) -> str:
    """MLflow status of a run ended by ``exc``: KILLED for a signal or Ctrl-C, FAILED otherwise.

    Inside a flow run Prefect turns SIGTERM into its ``TerminationSignal`` (an ``ExternalSignal``);
    outside, :func:`signals_raise` makes it segcore's ``Terminated`` (a ``KeyboardInterrupt``).
    """
    return KILLED if isinstance(exc, (KeyboardInterrupt, ExternalSignal)) else FAILED


def process_start(pid: int) -> str:
    """An identifier of when process ``pid`` started ("" when unknown or the process is gone).

    Linux: field 22 of ``/proc/<pid>/stat`` (clock ticks after boot). Elsewhere "" (then only the
    PID's existence is checked).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # fields after the command name start at field 3


def owner_tags() -> dict[str, str]:
    """Tags naming this process: host, PID and start time."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), START_TAG: process_start(pid)}


def process_gone(tags: dict[str, str]) -> bool:
    """Whether the process named by :func:`owner_tags` ``tags`` no longer runs (on this host only)."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return False
    pid = int(tags[PID_TAG])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        pass
    started = tags.get(START_TAG, "")
    return bool(started) and process_start(pid) not in ("", started)  # the PID was reused


@task(name="mark_stale_runs")
def mark_stale_runs(parent_run_id: str) -> list[str]:
    """Record this process as the owner of ``parent_run_id``, then mark ``KILLED`` every ``RUNNING``
    parent run of its experiment whose owning process is gone, and their ``RUNNING`` stage runs.

    Returns the ids of the runs marked, parents first.
    """
    c = tracking.client()
    tracking.set_tags(parent_run_id, owner_tags())
    experiment = c.get_run(parent_run_id).info.experiment_id
    running = c.search_runs([experiment], filter_string="attributes.status = 'RUNNING'", max_results=1000)
    stale = [r for r in running if r.info.run_id != parent_run_id and r.data.tags.get(tracking.STAGE_TAG) == "pipeline"
             and process_gone(r.data.tags)]
    marked: list[str] = []
    for run in stale:
        tags = run.data.tags
        reason = (f"process {tags[PID_TAG]} on {tags[HOST_TAG]} that ran this pipeline is gone (found by "
                  f"pipeline run {parent_run_id} at {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())})")
        children = [r for r in running if r.data.tags.get(tracking.PARENT_TAG) == run.info.run_id]
        for target in [run, *children]:
            tracking.set_tags(target.info.run_id, {REASON_TAG: reason})
            c.set_terminated(target.info.run_id, KILLED)
            marked.append(target.info.run_id)
    return marked


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM and SIGINT raise :class:`segcore.errors.Terminated` while the block runs."""
    from segcore.safety import terminate_raises

    with terminate_raises((signal.SIGTERM, signal.SIGINT)):
        yield


def resumable_checkpoint(experiment_id: str, config: dict, dataset_digest: str) -> tuple[str, Path, int] | None:
    """The latest KILLED train run of ``experiment_id`` this training can continue: same dataset
    digest, a checkpoint still in its run directory (``<train.out_dir>/<run id>``) whose recorded
    config equals ``config``. ``(run id, checkpoint, step)`` or ``None``.
    """
    from segcore.checkpoint import load_checkpoint
    from segcore.config import Config
    from segcore.errors import ArtifactError

    cfg = Config.from_dict(config)
    runs = tracking.client().search_runs(
        [experiment_id], filter_string=f"tags.`{tracking.STAGE_TAG}` = 'train' and attributes.status = 'KILLED'",
        order_by=["attributes.start_time DESC"], max_results=20)
    for run in runs:
        ckpt = Path(cfg.train.out_dir) / run.info.run_id / "checkpoints" / "last.pt"
        if run.data.tags.get("segcore.dataset.digest") != dataset_digest or not ckpt.is_file():
            continue
        try:
            state = load_checkpoint(ckpt)
        except ArtifactError:
            continue
        if Config.from_dict(state["config"]).hash() == cfg.hash():
            return run.info.run_id, ckpt, int(state["step"])
    return None


@contextlib.contextmanager
def registry_lock(model_name: str) -> Iterator[None]:
    """Serialise alias moves of ``model_name`` among the pipelines of this machine: a kernel file lock
    (keyed on the tracking URI and the model name, in the temp directory); waits for the holder."""
    import hashlib
    import tempfile

    from segcore.safety import exclusive_lock

    key = hashlib.sha256(f"{tracking.client().tracking_uri}\n{model_name}".encode()).hexdigest()[:16]
    with exclusive_lock(Path(tempfile.gettempdir()) / f"segcore-registry-{key}.lock", f"registered model "
                        f"{model_name}", doing="promoted", wait=True):
        yield


def champion_now(model_name: str) -> str:
    """The version the ``champion`` alias points at now ("" when none)."""
    from mlflow.exceptions import MlflowException

    from segcore.promotion import CHAMPION

    try:
        return str(tracking.client().get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        return ""
