"""``train.threads``: auto is a function of the machine (reproducible), with a warning when crowded."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from segcore.training import (
    _cpu_sample,
    busy_between,
    busy_cores_elsewhere,
    crowding_warning,
    training_threads,
    usable_cores,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_explicit_env_and_machine_values(monkeypatch):
    assert training_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert training_threads(0) == 5
    assert training_threads(2) == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert training_threads(0) == usable_cores()
    assert training_threads(0, world_size=2) == max(1, usable_cores() // 2)


def test_own_work_is_not_counted_as_busy():
    # Over 100 ticks of 2 CPUs: 40 idle, so 60 busy, 50 of them this process's own -> 10 elsewhere.
    assert busy_between((1000, 500, 200), (1100, 540, 250), online=2) == pytest.approx(0.2)
    assert busy_between((1000, 500, 200), (1100, 500, 300), online=2) == 0.0  # all of it ours
    assert busy_between((1000, 500, 200), (1000, 500, 200), online=2) is None  # no time passed


@linux_only
def test_own_spinning_thread_is_taken_out():
    # This process spinning in another thread: whatever else runs here, its core is subtracted.
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(range(1000))

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        first = _cpu_sample()
        time.sleep(0.5)
        second = _cpu_sample()
    finally:
        stop.set()
        worker.join()
    online = os.cpu_count() or 1
    everything = busy_between(first, (second[0], second[1], first[2]), online)  # own ticks not taken out
    assert everything - busy_between(first, second, online) >= 0.25  # the spinning thread (a core when idle)


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
