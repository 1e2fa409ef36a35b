"""``train.threads``: auto is a function of the machine (reproducible), with a warning when crowded."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from segcore.training import busy_cores_elsewhere, crowding_warning, training_threads, usable_cores

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_explicit_env_and_machine_values(monkeypatch):
    assert training_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert training_threads(0) == 5
    assert training_threads(2) == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert training_threads(0) == usable_cores()
    assert training_threads(0, world_size=2) == max(1, usable_cores() // 2)


@linux_only
def test_own_work_is_not_counted_as_busy():
    # This process spinning in another thread must not look like a neighbour.
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
def test_a_busy_neighbour_is_measured_and_warned_about():
    cores = usable_cores()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert busy_cores_elsewhere(0.5) >= 0.8  # the spinner's core, plus whatever else runs here
        warning = crowding_warning(cores)  # all cores' worth of threads while one core is taken
        assert "oversubscribes" in warning
        assert "train.threads=" in warning
    finally:
        spinner.kill()
        spinner.wait()
