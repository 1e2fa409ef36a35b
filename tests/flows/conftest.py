"""One Prefect test harness and one temporary MLflow SQLite store for all flow tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    yield root
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def orchestration(prefect_harness, mlflow_store):
    """Both: a real (temporary) Prefect API and a real MLflow store."""
    return mlflow_store
