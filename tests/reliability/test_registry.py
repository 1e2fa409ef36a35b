"""Rule 3 for registry promotion, on a real SQLite MLflow store: alias moves are serialised by a
kernel lock, and a version compared with an older champion never replaces a newer one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mlflow import MlflowClient

from segcore.errors import BusyError
from segcore.safety import exclusive_lock


@pytest.fixture
def registry(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    exp = client.create_experiment("reg", artifact_location=(tmp_path / "art").as_uri())
    return client, exp


def _version(client: MlflowClient, exp: str, name: str) -> str:
    from tasks.registry import register

    run = client.create_run(exp)
    return register(name, f"runs:/{run.info.run_id}/export", run.info.run_id, {"val/miou": 0.5})


def test_a_version_compared_with_an_old_champion_does_not_replace_a_new_one(registry) -> None:
    from tasks.registry import promote

    client, exp = registry
    v1 = _version(client, exp, "m")
    assert promote.fn("m", v1, {"val/miou": 0.3}, True, "check", "")["promoted"]
    v2, v3 = _version(client, exp, "m"), _version(client, exp, "m")  # two pipelines, both compared with v1
    better = {"val/miou": 0.6, "champion/val/miou": 0.3}
    assert promote.fn("m", v2, better, True, "check", v1)["promoted"]
    late = promote.fn("m", v3, {"val/miou": 0.7, "champion/val/miou": 0.3}, True, "check", v1)
    assert not late["promoted"]
    assert f"champion v{v2} was promoted by another run" in late["reason"]
    assert client.get_model_version_by_alias("m", "champion").version == v2
    assert "another run" in client.get_model_version("m", v3).description


def test_the_registry_lock_is_exclusive_across_processes(registry) -> None:
    import hashlib
    import tempfile

    from tasks.lifecycle import registry_lock

    client, _ = registry
    key = hashlib.sha256(f"{client.tracking_uri}\nm".encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"segcore-registry-{key}.lock"
    # A second open file description of the same lock file is a second writer, even in this process.
    with registry_lock("m"), pytest.raises(BusyError, match=f"PID {os.getpid()}"), exclusive_lock(path, "m"):
        pass
