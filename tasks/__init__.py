"""Thin Prefect tasks: each adapts one segcore stage to Prefect and MLflow.

Tasks take small values (paths, run ids, a config dict), call one segcore function, log under an
explicit MLflow run id, and return small values. Nothing heavier than a dict crosses a task boundary.
"""
