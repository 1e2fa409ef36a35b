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
  left alone (their process cannot be checked from here). Prefect's temporary API server outlives
  a SIGKILLed pipeline (nothing stops it), so each parent run also records that server's PID and
  start time (:func:`temporary_server_tags`); when the run is found stale, the server is stopped if
  that very process still runs (PID and start time both match, so nothing else is ever signalled).
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
SERVER_PID_TAG, SERVER_START_TAG = "segcore.prefect_server_pid", "segcore.prefect_server_start"
SERVER_STOPPED_TAG = "segcore.prefect_server_stopped"
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


def _children(pid: int) -> list[int]:
    """PIDs of the child processes of ``pid`` (Linux ``/proc``; [] elsewhere)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def temporary_server_tags() -> dict[str, str]:
    """PID and start time of Prefect's temporary API server when this process started one (a
    uvicorn child serving ``prefect.server``); {} with a real server (``PREFECT_API_URL``)."""
    for pid in _children(os.getpid()):
        cmd = _cmdline(pid)
        if "uvicorn" in cmd and "prefect" in cmd:
            return {SERVER_PID_TAG: str(pid), SERVER_START_TAG: process_start(pid)}
    return {}


def stop_orphaned_server(tags: dict[str, str], wait_s: float = 10.0) -> int | None:
    """Stop the temporary Prefect server recorded in a stale run's ``tags`` if that very process
    (same PID and start time, on this host) still runs; its PID when it was stopped."""
    pid, started = tags.get(SERVER_PID_TAG, ""), tags.get(SERVER_START_TAG, "")
    if tags.get(HOST_TAG) != socket.gethostname() or not pid.isdigit() or not started:
        return None
    if process_start(int(pid)) != started:
        return None  # gone, or the PID now names another process
    try:
        os.kill(int(pid), signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        while process_start(int(pid)) == started and time.monotonic() < deadline:
            time.sleep(0.1)
        if process_start(int(pid)) == started:
            os.kill(int(pid), signal.SIGKILL)
    except ProcessLookupError:
        pass
    return int(pid)


@task(name="mark_stale_runs")
def mark_stale_runs(parent_run_id: str) -> list[str]:
    """Record this process as the owner of ``parent_run_id``, then mark ``KILLED`` every ``RUNNING``
    parent run of its experiment whose owning process is gone, and their ``RUNNING`` stage runs.

    Returns the ids of the runs marked, parents first.
    """
    c = tracking.client()
    tracking.set_tags(parent_run_id, {**owner_tags(), **temporary_server_tags()})
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
        server = stop_orphaned_server(tags)
        if server is not None:
            tracking.set_tags(run.info.run_id, {SERVER_STOPPED_TAG: f"stopped its orphaned temporary Prefect "
                                                                    f"server, PID {server}"})
    return marked


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM and SIGINT raise :class:`segcore.errors.Terminated` while the block runs."""
    from segcore.safety import terminate_raises

    with terminate_raises((signal.SIGTERM, signal.SIGINT)):
        yield


#: Seconds to wait for Prefect's temporary API server (Prefect's default, 20, is about what its
#: first start with a fresh database takes on a busy 2-core machine; one such start timed out).
TEMPORARY_SERVER_STARTUP_S = 90
STARTUP_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"


@contextlib.contextmanager
def patient_temporary_server() -> Iterator[None]:
    """While the block runs, wait up to :data:`TEMPORARY_SERVER_STARTUP_S` for Prefect's temporary
    server to answer, unless the user chose a wait (``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``)."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    if STARTUP_ENV in os.environ:
        yield
        return
    wait = max(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(), TEMPORARY_SERVER_STARTUP_S)
    with temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: wait}):
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
