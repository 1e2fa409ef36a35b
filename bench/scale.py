"""Scaling on this machine: shard building per runner, DDP training per process count.

    python bench/scale.py [--data DIR] [--rasters 2] [--train-steps 12]

Shard building (DeepGlobe sample rasters, 512 px tiles): megapixels of written tiles per wall
second for a serial in-process ``build_shards`` (reference), the per-shard fan-out on Prefect's
thread runner (2 threads), and on a Dask ``LocalCluster`` of 1 and 2 single-threaded worker
processes. The cluster is started and its workers have imported segcore before the clock starts
(startup is reported separately); a real Prefect server on 127.0.0.1 records the task runs.
Training: images per wall second over every rank (rank 0's rate x world size, from
``fit-result.json``) of ``segcore.distributed`` under torchrun with 1 and 2 gloo processes (one
thread each), plus 1 process with 2 threads; torchrun/import startup is not counted. Ratios are
against the 1-worker / 1-process rows of the same run. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segcore.config import Config

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "../shared/data/deepglobe-sample"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_prefect_server(home: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_UI_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    with open(home / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5):
                return proc, url
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise RuntimeError(f"prefect server did not start; see {home / 'server.log'}")


def shard_rows(data: Path, rasters: int, tmp: Path) -> list[tuple[str, float, float]]:
    """``[(runner, MP/s, seconds)]`` for serial, thread, dask-1 and dask-2 builds of the same rasters."""
    from distributed import Client, LocalCluster

    from flows.build_shards_flow import build_shards_fanout
    from segcore.data.shards import build_shards
    from tasks.build_shards_dask import local_cluster_kwargs

    rows_in = [ln.split(",") for ln in (data / "manifest.csv").read_text().splitlines()[1 : rasters + 1]]
    manifest = tmp / "manifest.csv"
    manifest.write_text("image,label\n" + "".join(f"{data / r[0]},{data / r[1]}\n" for r in rows_in))
    cfg = Config().replace(**{"data.manifest": str(manifest), "data.processed_root": str(tmp / "processed"),
                              "data.dataset": "bench", "data.tile_size": 512, "data.tiles_per_shard": 4})
    config = cfg.to_dict()

    def timed(fn) -> tuple[float, float]:
        shutil.rmtree(tmp / "processed", ignore_errors=True)
        start = time.perf_counter()
        root = Path(fn())
        seconds = time.perf_counter() - start
        tiles = json.loads((root / "manifest.json").read_text())["counts"]["tiles_written"]
        return tiles * 512 * 512 / 1e6 / seconds, seconds

    rows = [("serial build_shards (in-process)", *timed(lambda: build_shards(cfg, progress=False).root)),
            ("thread runner, 2 threads", *timed(lambda: build_shards_fanout(config, "thread")))]
    for workers in (1, 2):
        t0 = time.perf_counter()
        with LocalCluster(**local_cluster_kwargs(workers)) as cluster, Client(cluster) as client:
            client.run(lambda: __import__("tasks.build_shards_dask"))
            startup = time.perf_counter() - t0
            address = cluster.scheduler_address
            mps, seconds = timed(lambda a=address: build_shards_fanout(config, "dask", dask_address=a))
        rows.append((f"Dask, {workers} worker process{'es' if workers > 1 else ''} (startup {startup:.1f} s)",
                     mps, seconds))
    return rows


def train_rows(steps: int, tmp: Path) -> list[tuple[str, float, float]]:
    """``[(setup, images/s over all ranks, seconds)]`` for torchrun with 1 and 2 processes."""
    from segcore.distributed import launch_torchrun

    rows = []
    for nproc, threads in ((1, 1), (2, 1), (1, 2)):
        cfg = Config().replace(**{"data.source": "synthetic", "data.synthetic_count": 8, "data.synthetic_size": 256,
                                  "data.patch_sizes": (128,), "train.batch_size": 4, "train.steps": steps,
                                  "train.checkpoint_every": 0, "train.nproc": nproc, "train.device": "cpu"})
        run_dir = tmp / f"train-{nproc}x{threads}"
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        start = time.perf_counter()
        if launch_torchrun(cfg, run_dir, env=env) != 0:
            raise RuntimeError(f"torchrun failed for {nproc} process(es)")
        result = json.loads((run_dir / "fit-result.json").read_text())
        label = f"{nproc} process{'es' if nproc > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"
        rows.append((label, result["global_images_per_s"], time.perf_counter() - start))
    return rows


def table(title: str, unit: str, rows: list[tuple[str, float, float]], baseline: int) -> str:
    base = rows[baseline][1]
    out = [f"| {title} | {unit} | wall s | vs baseline |", "|---|---|---|---|"]
    out += [f"| {name} | {v:.2f} | {s:.1f} | {v / base:.2f}x |" for name, v, s in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="DeepGlobe-style directory with manifest.csv")
    parser.add_argument("--rasters", type=int, default=2, help="rasters to build shards from")
    parser.add_argument("--train-steps", type=int, default=12, help="optimizer steps per training run")
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with tempfile.TemporaryDirectory(prefix="segcore-bench-scale-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["DASK_TEMPORARY_DIRECTORY"] = str(tmp / "dask")
        if (args.data / "manifest.csv").is_file():
            (tmp / "prefect").mkdir()
            server, url = start_prefect_server(tmp / "prefect")
            os.environ["PREFECT_API_URL"] = url
            try:
                from prefect.settings import PREFECT_API_URL, temporary_settings

                with temporary_settings(updates={PREFECT_API_URL: url}):
                    rows = shard_rows(args.data.resolve(), args.rasters, tmp)
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(60)
            print(table(f"shard building, {args.rasters} rasters", "MP/s", rows, baseline=2), "\n")
        else:
            print(f"skipping shard building: {args.data / 'manifest.csv'} not found (pass --data)\n")
        print(table(f"DDP training, {args.train_steps} steps", "images/s", train_rows(args.train_steps, tmp), 0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
