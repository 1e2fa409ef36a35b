"""Prefect flows of segcore: they sequence the stage tasks of :mod:`tasks` and handle parameters.

``flows`` and ``tasks`` are installed with segcore (``pip install -e .``), so a flow file runs as a
script from anywhere (``python flows/full_pipeline.py``) and as a deployment entrypoint without
any ``sys.path`` changes.
"""
