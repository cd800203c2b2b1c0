"""``spark-tracking move-runs``: copy the runs a session kept in the embedded store (because
its Azure ML link failed) to the store it should have used, once the link works.

Each run is created again in the target (same experiment name, AML-safe; run name, start and
end time, status, params, tags, every metric point with its timestamp and step, artifacts),
in batches the target accepts (``store.limits_for``), parents before their nested runs. The
source run then gets the tag ``spark_tracking.moved_to`` (the target run id), so running the
command again moves only what is left.
"""

from __future__ import annotations

import sys

from ..forwarding.protocol import PARENT_TAG
from ..validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

MOVED_TAG = "spark_tracking.moved_to"


def register(subparsers) -> None:
    """Add ``move-runs`` to the ``spark-tracking`` command."""
    p = subparsers.add_parser(
        "move-runs",
        help="copy runs from the embedded store to the configured store",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--from", dest="source", required=True, help="store to move from (the embedded store's URI)")
    p.add_argument(
        "--to",
        dest="target",
        default=None,
        help="store to move to (default: where this session logs: the Azure ML link)",
    )
    p.set_defaults(func=_run)


def _run(args) -> int:
    import mlflow

    from .. import session

    target = args.target
    if target is None:
        session.configure(strict=True)
        target = mlflow.get_tracking_uri()
    if target == args.source:
        print(
            f"error: the target store is the source store ({target}); fix the link first "
            "(spark-tracking doctor), or pass --to",
            file=sys.stderr,
        )
        return 1
    moved, skipped = move_runs(args.source, target)
    print(f"moved {moved} run(s) to {target}; {skipped} had been moved before")
    return 0


def move_runs(source_uri: str, target_uri: str) -> tuple[int, int]:
    """Copy every run of ``source_uri`` not moved yet to ``target_uri``; (moved, skipped)."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    from ..session import aml_safe_experiment_name
    from .store import is_aml_tracking_uri, limits_for

    source, target = MlflowClient(source_uri), MlflowClient(target_uri)
    mover = _Mover(source, target, limits_for(target_uri))
    moved = skipped = 0
    for experiment in source.search_experiments(view_type=ViewType.ALL):
        runs = sorted(_all_runs(source, experiment.experiment_id), key=lambda r: r.info.start_time or 0)
        runs.sort(key=lambda r: PARENT_TAG in r.data.tags)  # parents first (stable: keeps the time order)
        name = aml_safe_experiment_name(experiment.name) if is_aml_tracking_uri(target_uri) else experiment.name
        for run in runs:
            if run.data.tags.get(MOVED_TAG):
                mover.ids[run.info.run_id] = run.data.tags[MOVED_TAG]
                skipped += 1
                continue
            mover.move(run, name)
            moved += 1
    return moved, skipped


def _all_runs(client, experiment_id: str):
    from mlflow.entities import ViewType

    token = None
    while True:
        page = client.search_runs([experiment_id], run_view_type=ViewType.ALL, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


class _Mover:
    def __init__(self, source, target, limits):
        self.source, self.target, self.limits = source, target, limits
        self.ids: dict[str, str] = {}
        self.experiments: dict[str, str] = {}

    def _experiment_id(self, name: str) -> str:
        if name not in self.experiments:
            found = self.target.get_experiment_by_name(name)
            self.experiments[name] = found.experiment_id if found else self.target.create_experiment(name)
        return self.experiments[name]

    def move(self, run, experiment_name: str) -> None:
        import tempfile

        from mlflow.entities import Param, RunTag

        tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.source.")}
        if PARENT_TAG in tags:
            tags[PARENT_TAG] = self.ids.get(tags[PARENT_TAG], tags[PARENT_TAG])
        created = self.target.create_run(
            self._experiment_id(experiment_name), start_time=run.info.start_time, tags=tags, run_name=run.info.run_name
        )
        new_id = created.info.run_id
        params = [Param(k, v) for k, v in sorted(run.data.params.items())]
        cap = self.limits.max_params_per_run
        if cap and len(params) > cap:
            raise RuntimeError(f"run {run.info.run_id} has {len(params)} params; the target accepts {cap} per run")
        source_tags = [RunTag(k, v) for k, v in run.data.tags.items() if k.startswith("mlflow.source.")]
        per_batch = MAX_PARAMS_TAGS_PER_BATCH
        for start in range(0, max(len(params), len(source_tags)), per_batch):  # after creation: AML drops them at it
            self.target.log_batch(
                new_id, params=params[start : start + per_batch], tags=source_tags[start : start + per_batch]
            )
        for batch in self._metric_batches(run.info.run_id, run.data.metrics):
            self.target.log_batch(new_id, metrics=batch)
        with tempfile.TemporaryDirectory() as folder:
            if self.source.list_artifacts(run.info.run_id):
                local = self.source.download_artifacts(run.info.run_id, "", folder)
                self.target.log_artifacts(new_id, local)
        self.target.set_terminated(new_id, run.info.status, run.info.end_time)
        self.source.set_tag(run.info.run_id, MOVED_TAG, new_id)
        self.ids[run.info.run_id] = new_id

    def _metric_batches(self, run_id: str, keys):
        per_key = self.limits.max_values_per_key or MAX_METRICS_PER_BATCH
        batch: list = []
        for key in sorted(keys):
            history = self.source.get_metric_history(run_id, key)
            for start in range(0, len(history), per_key):
                chunk = history[start : start + per_key]
                # a batch full, or a key's next chunk: next batch
                if len(batch) + len(chunk) > MAX_METRICS_PER_BATCH or (start and batch):
                    yield batch
                    batch = []
                batch.extend(chunk)
        if batch:
            yield batch
