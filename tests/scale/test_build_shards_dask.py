"""Shard building fanned out per shard on Prefect task runners: the same bytes as a serial build."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import psutil
import pytest
from scale_support import shard_config, snapshot

from flows.build_shards_flow import build_shards_fanout
from segcore.config import Config
from segcore.data.shards import build_shards
from tasks.build_shards_dask import local_cluster_kwargs, task_runner_for

LOOPBACK = ("127.0.0.1", "::1")


@pytest.fixture(scope="module")
def serial(geotiffs, tmp_path_factory) -> tuple[dict, Path, dict[str, bytes]]:
    """A serial build (the reference bytes); the dataset directory is removed for the next build."""
    config = shard_config(geotiffs, tmp_path_factory.mktemp("processed"))
    root = Path(build_shards(Config.from_dict(config), progress=False).root)
    files = snapshot(root)
    assert len([f for f in files if f.endswith("shard.json")]) >= 4  # enough shards to fan out
    shutil.rmtree(root)
    return config, root, files


def _listening(pids: list[int]) -> list[tuple[int, str, int]]:
    out = []
    for pid in pids:
        for c in psutil.Process(pid).net_connections(kind="inet"):
            if c.status == psutil.CONN_LISTEN:
                out.append((pid, c.laddr.ip, c.laddr.port))
    return out


def test_task_runner_choice():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    assert isinstance(task_runner_for("thread"), ThreadPoolTaskRunner)
    remote = task_runner_for("dask", dask_address="tcp://127.0.0.1:8786")
    assert isinstance(remote, DaskTaskRunner)
    assert remote.address == "tcp://127.0.0.1:8786"
    local = task_runner_for("dask", dask_workers=3)
    assert local.cluster_kwargs["n_workers"] == 3
    assert local.cluster_kwargs["processes"] is True
    with pytest.raises(ValueError, match="thread, dask"):
        task_runner_for("ray")


@pytest.mark.slow
def test_thread_runner_matches_serial_build(serial, use_prefect_server):
    config, root, reference = serial
    published = build_shards_fanout(config, "thread")
    assert Path(published) == root.resolve()
    assert snapshot(root) == reference
    # A second run over the published dataset reuses every shard and publishes the same bytes.
    build_shards_fanout(config, "thread")
    assert snapshot(root) == reference
    shutil.rmtree(root)


@pytest.mark.slow
def test_dask_cluster_matches_serial_build_and_stays_on_loopback(serial, use_prefect_server, tmp_path):
    from distributed import Client, LocalCluster

    config, root, reference = serial
    os.environ.setdefault("DASK_TEMPORARY_DIRECTORY", str(tmp_path))
    with LocalCluster(**local_cluster_kwargs(2)) as cluster, Client(cluster) as client:
        workers = [w.process.pid for w in cluster.workers.values()]
        sockets = _listening([os.getpid(), *workers])
        assert sockets
        assert all(ip in LOOPBACK for _, ip, _ in sockets), sockets
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")

        published = build_shards_fanout(config, "dask", dask_address=cluster.scheduler_address)

        # The shards were written in the worker processes, not here.
        wrote = client.run(lambda: "segcore.data.shard_index" in sys.modules)
        assert any(wrote.values()), wrote
    assert Path(published) == root.resolve()
    assert snapshot(root) == reference
    shutil.rmtree(root)


@pytest.mark.slow
def test_fanout_build_takes_the_dataset_lock(serial, use_prefect_server):
    # A serial build (here: another process holding the dataset's lock) and a fanned-out build of the
    # same dataset exclude each other: the fan-out fails at once naming the holder, writes nothing.
    import subprocess

    from segcore.errors import BusyError
    from segcore.safety import lock_path_for

    config, root, _ = serial
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom segcore.safety import exclusive_lock\n"
         "with exclusive_lock(sys.argv[1], 'test'):\n    print('locked', flush=True)\n    sys.stdin.read()\n",
         str(lock_path_for(root))], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BusyError, match=f"dataset {root} is being built by PID {holder.pid}"):
            build_shards_fanout(config, "thread")
        assert not root.exists()
        assert not list(root.parent.glob(".staging-*"))
    finally:
        holder.kill()
        holder.wait()
