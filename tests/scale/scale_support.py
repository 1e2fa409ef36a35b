"""Helpers of the scale-out tests: processes in their own group, free ports, health polls, shard configs.

Used by ``conftest.py`` (the server fixtures) and the tests; imported as a plain module.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 240  # a bound that turns a hung start into a failure, not a speed requirement


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    """A process started in its own session (process group ``pid``), output in ``log``."""

    popen: subprocess.Popen
    log: Path

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self, signals: int = 1, grace_s: float = 30) -> None:
        """SIGTERM to the group (``signals`` times, 1 s apart), SIGKILL whatever is left after ``grace_s``."""
        pgid = self.popen.pid
        for i in range(signals):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            if i + 1 < signals:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # children of the group that ignored SIGTERM
        self.popen.wait(10)


def start(cmd: list[str], log: Path, env: dict[str, str], cwd: Path | None = None) -> Proc:
    out = open(log, "wb")  # noqa: SIM115 (closed by the child's exit; the parent's copy below)
    try:
        popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                 start_new_session=True)
    finally:
        out.close()
    return Proc(popen, log)


def wait_http(url: str, proc: Proc, timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll ``url`` until it answers 200; fail with the server log if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            pytest.fail(f"{url}: server exited with {proc.popen.returncode}:\n{proc.tail()}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as resp:
            if resp.status == 200:
                return
        time.sleep(0.5)
    proc.stop()
    pytest.fail(f"{url}: no answer within {timeout_s} s:\n{proc.tail()}")


def base_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false",
                "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
    env.update(extra)
    return env


def shard_config(data_dir: Path, out: Path, **data) -> dict:
    """A small shard-building config over the GeoTIFFs of ``data_dir/manifest.csv``."""
    from segcore.config import Config

    values = {"manifest": str(data_dir / "manifest.csv"), "processed_root": str(out), "dataset": "scale",
              "tile_size": 64, "tiles_per_shard": 2, "slic_region_size": 16, "min_valid": 0.5}
    values.update(data)
    return Config().replace(**{f"data.{k}": v for k, v in values.items()}).to_dict()


def snapshot(root: Path) -> dict[str, bytes]:
    """``{relative path: bytes}`` of every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


