"""``train.threads``: auto takes the cores other processes leave free (measured, not assumed)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from segcore.training import busy_cores_elsewhere, training_threads, usable_cores

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_explicit_and_env_values_win(monkeypatch):
    assert training_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert training_threads(0) == 5
    assert training_threads(2) == 2


@linux_only
def test_own_work_is_not_counted_as_busy(monkeypatch):
    # This process spinning in another thread must not look like a neighbour.
    import threading

    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(range(1000))

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        assert busy_cores_elsewhere(0.5) < 0.5
    finally:
        stop.set()
        worker.join()


@linux_only
def test_a_busy_neighbour_takes_its_core(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = usable_cores()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = busy_cores_elsewhere(0.5)
        assert busy >= 0.8  # the spinner's core, plus whatever else runs here
        assert training_threads(0) <= max(1, cores - 1)  # one core is the spinner's
    finally:
        spinner.kill()
        spinner.wait()
    # Two ranks share what is free.
    assert training_threads(0, world_size=2) <= max(1, cores // 2)
