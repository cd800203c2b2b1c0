"""``spark-tracking replay``: deliver what the driver spooled to disk when the store was down.

Each spool file is one ``log_batch`` request with the timestamps of the original log calls;
MLflow's SQL store keeps one row per (key, timestamp, step, run, value), so replaying a file
twice stores its points once. A file is claimed before it is read (a driver draining the same
folder skips it) and deleted only after the store took it. A file the store refuses (a deleted
run, a value it rejects) is reported, moved to ``<spool>/refused/`` with the reason beside it,
and replay goes on with the next; when the store cannot be reached, replay stops and leaves
the rest for the next run.
"""

from __future__ import annotations

import os


def register(subparsers) -> None:
    """Add the ``replay`` command to the ``spark-tracking`` parser."""
    p = subparsers.add_parser("replay", help="deliver spooled points to the store")
    p.add_argument("--spool-dir", default=None, help="spool folder (default: <home>/spool)")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="store to deliver to (default: the URI recorded in each file, else the configured one)",
    )
    p.set_defaults(func=_run)


class Outcome:
    """What a replay did: files delivered, refused (moved aside), left in the spool."""

    def __init__(self, delivered: int = 0, refused: int = 0, left: int = 0):
        self.delivered, self.refused, self.left = delivered, refused, left


def replay(spool_dir: str, tracking_uri: str | None = None, progress: bool = True) -> Outcome:
    """Deliver every spool file; returns how many were delivered, refused and left."""
    from mlflow.tracking import MlflowClient

    from .decode import clean_metrics
    from .spool import Spool
    from .writers import is_invalid_request

    spool = Spool(spool_dir, max_bytes=1 << 62)
    files = spool.files()
    outcome = Outcome()
    clients: dict[str | None, MlflowClient] = {}  # None: the configured store
    bar = _progress_bar(len(files)) if progress and files else None
    for n, path in enumerate(files):
        claimed = spool.claim(path)
        if claimed is None:
            continue  # another process (a driver's sink) is delivering it
        name = os.path.basename(path)
        try:
            record = Spool.read(claimed)
            uri = tracking_uri or record.get("tracking_uri")
            client = clients.get(uri) or clients.setdefault(uri, MlflowClient(uri))
            request = {k: record[k] for k in ("run_id", "metrics", "params", "tags")}
            beyond: list = []
            request["metrics"], bad = clean_metrics(request["metrics"], beyond)
            _log_batch(client, request)
            if beyond or bad:  # the store fails on them (as if it were down): kept aside, the rest stored
                reason = (
                    f"{len(beyond) + bad} point(s) MLflow cannot store (a step or timestamp outside signed 64 bits"
                    + (f", {bad} malformed)" if bad else ")")
                )
                aside = spool.write_aside(name, dict(record, metrics=[list(p) for p in beyond]), reason)
                outcome.refused += 1
                print(f"refused {reason} in {name}; the rest was delivered; moved them to {aside}")
        except Exception as exc:  # noqa: BLE001 - any failure: refused files are set aside, else replay stops
            if not (isinstance(exc, (ValueError, KeyError)) or is_invalid_request(exc)):
                spool.release(claimed)
                outcome.left = len(files) - n
                print(
                    f"stopped at {name}: the store did not answer ({type(exc).__name__}: {exc}); "
                    f"run replay again once it does"
                )
                break
            aside = spool.set_aside(claimed, f"{type(exc).__name__}: {exc}")
            outcome.refused += 1
            print(f"refused {name}: {type(exc).__name__}: {exc}; moved to {aside}")
        else:
            spool.remove(claimed)
            outcome.delivered += 1
        if bar is not None:
            bar.update(1)
        elif progress:
            print(f"[{n + 1}/{len(files)}] {name}")
    if bar is not None:
        bar.close()
    return outcome


def _progress_bar(total: int):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="file", desc="replay")


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
    from ...config import Config

    cfg = Config.resolve()
    spool_dir = args.spool_dir or os.path.join(cfg.home, "spool")
    outcome = replay(spool_dir, args.tracking_uri)
    refused = (
        f"; {outcome.refused} refused by the store, kept in {os.path.join(spool_dir, 'refused')}"
        if outcome.refused
        else ""
    )
    print(f"replayed {outcome.delivered} spool file(s) from {spool_dir}{refused}; {outcome.left} left")
    return 0 if outcome.left == 0 and outcome.refused == 0 else 1
