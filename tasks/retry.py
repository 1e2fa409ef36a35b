"""Retry policy: only I/O failures are worth another try."""

from __future__ import annotations


def retry_on_io(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry OSErrors and connection errors, nothing else."""
    try:
        state.result()
    except (OSError, ConnectionError, TimeoutError):
        return True
    except Exception:
        return False
    return False
