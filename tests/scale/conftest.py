"""Real servers for the scale-out tests: a Prefect API server and an MLflow tracking server.

Both bind 127.0.0.1 on free ports, run in their own process group (``setsid``) with their own
state directories, and are stopped by process group at the end of the session. The scale tests use
them through the environment (for the processes they start) and Prefect's settings context (for
this process, whose settings were fixed when prefect was imported).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from scale_support import Proc, base_env, free_port, start, wait_http


@dataclass
class Server:
    url: str
    home: Path
    proc: Proc


@contextmanager
def serving(proc: Proc, url: str, home: Path) -> Iterator[Server]:
    """Wait for ``url/health``, hand out the server, and stop its process group afterwards."""
    try:
        wait_http(f"{url}/health", proc)
        yield Server(url, home, proc)
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> Iterator[Server]:
    """``prefect server start`` on 127.0.0.1 with its own PREFECT_HOME (SQLite)."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = base_env(PREFECT_HOME=str(home))
    proc = start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                 home / "server.log", env)
    with serving(proc, f"http://127.0.0.1:{port}/api", home) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[Server]:
    """``mlflow server`` on 127.0.0.1: SQLite backend, artifacts served over HTTP, one worker, no jobs."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = base_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination",
           str(home / "artifacts"), "--workers", "1"]
    proc = start(cmd, home / "server.log", env, cwd=home)
    with serving(proc, f"http://127.0.0.1:{port}", home) as server:
        yield server


@pytest.fixture
def use_prefect_server(prefect_server, monkeypatch) -> Iterator[Server]:
    """Flows in this process and the processes it starts talk to ``prefect_server``."""
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", prefect_server.url)
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield prefect_server


@pytest.fixture
def use_mlflow_server(mlflow_server, monkeypatch) -> Server:
    """MLflow clients in this process and its children track into ``mlflow_server``."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return mlflow_server


@pytest.fixture(scope="session")
def geotiffs(tmp_path_factory) -> Path:
    """Four labelled synthetic 128 px GeoTIFF scenes and their ``manifest.csv`` (one in ``val``)."""
    from segcore.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("geotiffs"), count=4, size=128, seed=5, val_fraction=0.25)
