"""The library stays pure: importing any segcore module never loads prefect or mlflow."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import importlib, pkgutil, sys
import segcore
names = [m.name for m in pkgutil.walk_packages(segcore.__path__, "segcore.")]
for name in names:
    importlib.import_module(name)
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("prefect", "mlflow"))
print(len(names))
print(",".join(bad))
"""


def test_segcore_never_imports_prefect_or_mlflow():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert int(out[0]) >= 3, "expected to import several segcore modules"
    assert out[1] == "", f"segcore pulled in orchestration packages: {out[1]}"


def test_core_modules_import_without_orchestration():
    script = (
        "import sys, segcore, segcore.config;"
        "print(any(m.split('.')[0] in ('prefect','mlflow') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == "False"
