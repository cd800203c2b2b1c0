"""``spark-tracking replay``: deliver what the driver spooled to disk when the store was down.

Each spool file is one ``log_batch`` request with the timestamps of the original log calls;
MLflow's SQL store keeps one row per (key, timestamp, step, run, value), so replaying a file
twice stores its points once. A file is deleted only after the store took it.
"""

from __future__ import annotations

import os


def register(subparsers) -> None:
    p = subparsers.add_parser("replay", help="deliver spooled points to the store")
    p.add_argument("--spool-dir", default=None, help="spool folder (default: <home>/spool)")
    p.add_argument("--tracking-uri", default=None,
                   help="store to deliver to (default: the URI recorded in each file, else the configured one)")
    p.set_defaults(func=_run)


def replay(spool_dir: str, tracking_uri: str | None = None, progress: bool = True) -> tuple[int, int]:
    """Deliver every spool file; returns (files delivered, files left)."""
    from mlflow.tracking import MlflowClient

    from .sink import Spool

    spool = Spool(spool_dir, max_bytes=1 << 62)
    files = spool.files()
    delivered = 0
    clients: dict[str, MlflowClient] = {}
    bar = None
    if progress and files:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(files), unit="file", desc="replay")
        except ImportError:
            bar = None
    for path in files:
        record = Spool.read(path)
        uri = tracking_uri or record.get("tracking_uri")
        client = clients.get(uri) or clients.setdefault(uri, MlflowClient(uri))
        request = {k: record[k] for k in ("run_id", "metrics", "params", "tags")}
        try:
            _log_batch(client, request)
        except Exception as exc:
            print(f"stopped at {os.path.basename(path)}: {exc}")
            break
        os.remove(path)
        delivered += 1
        if bar is not None:
            bar.update(1)
        elif progress:
            print(f"[{delivered}/{len(files)}] {os.path.basename(path)}")
    if bar is not None:
        bar.close()
    return delivered, len(files) - delivered


def _log_batch(client, request: dict) -> None:
    from mlflow.entities import Metric, Param, RunTag

    client.log_batch(
        request["run_id"],
        metrics=[Metric(k, v, ts, step) for k, v, ts, step in request["metrics"]],
        params=[Param(k, v) for k, v in request["params"]],
        tags=[RunTag(k, v) for k, v in request["tags"]],
        synchronous=True,
    )


def _run(args) -> int:
    from ..config import Config

    cfg = Config.resolve()
    spool_dir = args.spool_dir or os.path.join(cfg.home, "spool")
    delivered, left = replay(spool_dir, args.tracking_uri)
    print(f"replayed {delivered} spool file(s) from {spool_dir}; {left} left")
    return 0 if left == 0 else 1
