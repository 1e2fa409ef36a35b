"""Which export ``segcore predict`` uses when it is given none: the current champion.

* With ``MLFLOW_TRACKING_URI`` set to a tracking server (``http(s)://``), the version of the
  registered model (default ``segcore-student``) under the alias ``champion``: its export is
  downloaded once into ``<work dir>/champion/<model>-v<version>/`` and reused.
* Otherwise (no tracking URI, or a local store such as ``sqlite:///mlflow.db`` that only the
  pipeline's own process reads), the newest export under the work directory (by the time its
  ``meta.json`` was written): ``<work>/exports/*`` (where the pipeline writes them), ``<work>/export``
  and ``<work>/*/export``.

The registry is read through MLflow's REST API with the standard library (``urllib``), so the
library never imports mlflow (house rule: ``segcore`` knows nothing of the orchestration). Every
function returns the export directory and a sentence saying which export it is and why.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from segcore.errors import ArtifactError, SegcoreError
from segcore.runtime import FILES, read_meta

log = logging.getLogger(__name__)

MODEL_NAME = "segcore-student"
ALIAS = "champion"
EXPORT_GLOBS = ("exports/*", "export", "*/export", "*/exports/*")
OPTIONAL_FILES = ("codebook.npz", "model.onnx")
TIMEOUT_S = 30


def newest_export(work_dir: str | Path) -> Path | None:
    """The export under ``work_dir`` whose ``meta.json`` is newest (valid exports only), or None."""
    work = Path(work_dir)
    found: list[tuple[float, str]] = []
    for pattern in EXPORT_GLOBS:
        for d in work.glob(pattern):
            try:
                read_meta(d)
            except SegcoreError:
                continue
            found.append(((d / "meta.json").stat().st_mtime, str(d)))
    return Path(max(found)[1]) if found else None


def predict_command(export_dir: str | Path, raster: str = "IN.tif", output: str = "OUT.tif") -> str:
    """A ready-to-paste ``segcore predict`` command for ``export_dir`` (e.g. for a pipeline summary)."""
    import shlex

    export = shlex.quote(str(Path(export_dir).resolve()))
    return f"segcore predict {raster} {output} --export {export} --vector {Path(output).stem}.gpkg"


def _get_json(url: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")[:300]
        raise ArtifactError(f"tracking server: {url} answered {exc.code}: {body}") from exc
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"tracking server: {url} is not reachable ({exc})") from exc


def _api(base: str, endpoint: str, **params: str) -> dict:
    return _get_json(f"{base.rstrip('/')}/api/2.0/{endpoint}?{urllib.parse.urlencode(params)}")


def _download_run_dir(base: str, run_id: str, path: str, dst: Path) -> None:
    """The files of run artifact directory ``path`` into ``dst`` (through the server's artifact proxy)."""
    run = _api(base, "mlflow/runs/get", run_id=run_id)["run"]
    root = run["info"]["artifact_uri"]
    listing = _api(base, "mlflow/artifacts/list", run_id=run_id, path=path).get("files", [])
    names = [Path(f["path"]).name for f in listing if not f.get("is_dir")]
    missing = [n for n in FILES if n not in names]
    if missing:
        raise ArtifactError(f"run {run_id} artifact {path!r} lacks {', '.join(missing)}: not a segcore export")
    if root.startswith("mlflow-artifacts:"):
        proxied = urllib.parse.urlparse(root).path.lstrip("/")
        for name in names:
            url = f"{base.rstrip('/')}/api/2.0/mlflow-artifacts/artifacts/{proxied}/{path}/{name}"
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp, open(dst / name, "wb") as fh:
                shutil.copyfileobj(resp, fh)
        return
    local = Path(urllib.parse.urlparse(root).path if root.startswith("file:") else root) / path
    if not local.is_dir():
        raise ArtifactError(f"run {run_id}: artifacts at {root} are neither proxied by the server nor on this "
                            "machine; start the server with --artifacts-destination, or pass --export")
    for name in names:
        shutil.copy2(local / name, dst / name)


def registry_champion(tracking_uri: str, work_dir: str | Path, model_name: str = MODEL_NAME) -> tuple[Path, str]:
    """Download (once) and return the export of ``model_name@champion`` from an http(s) tracking server."""
    version = _api(tracking_uri, "mlflow/registered-models/alias", name=model_name, alias=ALIAS)["model_version"]
    source, run_id, number = version["source"], version.get("run_id", ""), version["version"]
    if not source.startswith("runs:/"):
        raise ArtifactError(f"{model_name} v{number}: source {source!r} is not a run artifact (runs:/...)")
    src_run, _, path = source[len("runs:/"):].partition("/")
    dst = Path(work_dir) / "champion" / f"{model_name}-v{number}"
    if not (dst / "meta.json").is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
        try:
            _download_run_dir(tracking_uri, src_run or run_id, path, tmp)
            read_meta(tmp)
            if dst.exists():
                shutil.rmtree(dst)
            os.replace(tmp, dst)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dst, f"the champion {model_name} v{number} from the registry at {tracking_uri} (run {src_run})"


def find_champion(work_dir: str | Path, model_name: str = MODEL_NAME, tracking_uri: str | None = None
                  ) -> tuple[Path, str]:
    """The export to predict with and why (see the module docstring); ArtifactError when there is none.

    ``tracking_uri`` defaults to ``$MLFLOW_TRACKING_URI``.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI", "") if tracking_uri is None else tracking_uri
    note = ""
    if uri.startswith(("http://", "https://")):
        return registry_champion(uri, work_dir, model_name)
    if uri:
        note = f" (MLFLOW_TRACKING_URI={uri} is not a tracking server, so the registry is not read from here)"
    newest = newest_export(work_dir)
    if newest is None:
        raise ArtifactError(f"no export given and none found under {work_dir} ({', '.join(EXPORT_GLOBS)}){note}; "
                            "pass --export DIR or --work-dir, or set MLFLOW_TRACKING_URI to a tracking server")
    return newest, f"the newest export under {work_dir}{note}"
