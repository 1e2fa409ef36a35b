"""The pipeline's command waits longer than Prefect's default for its temporary server, unless told otherwise."""

from __future__ import annotations

from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as WAIT

from tasks.lifecycle import STARTUP_ENV, TEMPORARY_SERVER_STARTUP_S, patient_temporary_server


def test_wait_is_raised_inside_and_restored_after(monkeypatch):
    monkeypatch.delenv(STARTUP_ENV, raising=False)
    before = WAIT.value()
    with patient_temporary_server():
        assert WAIT.value() == max(before, TEMPORARY_SERVER_STARTUP_S) >= 90
    assert WAIT.value() == before


def test_a_wait_the_user_chose_is_kept(monkeypatch):
    monkeypatch.setenv(STARTUP_ENV, "7")
    before = WAIT.value()
    with patient_temporary_server():
        assert WAIT.value() == before
