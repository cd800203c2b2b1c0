"""What ``spark-tracking show`` reads of a run, as plain data: :class:`RunData`, filled by
:func:`load_run` through :class:`~spark_tracking.store.RunReader`, the one part of ``show``
that talks to the store. The text (:mod:`spark_tracking.show_text`) and the figure
(:mod:`spark_tracking.show_plot`) are built from a ``RunData``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunData:
    """What ``show`` needs of a run, as plain data."""

    run_id: str
    name: str = ""
    status: str = ""
    experiment: str = ""
    #: metric key -> [(step, value)] in step order (ties by timestamp)
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    #: text name -> values (``run.log(name, "text")``)
    texts: dict[str, list[str]] = field(default_factory=dict)
    #: table name -> {column: [values]}
    tables: dict[str, dict[str, list]] = field(default_factory=dict)
    #: image name -> artifact paths (the driver's, then the tasks')
    images: dict[str, list[str]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The run's name and short id, for legends and headers."""
        return f"{self.name} ({self.run_id[:8]})" if self.name else self.run_id[:8]


def load_run(client, run_id: str) -> RunData:
    """Read a run from the store (the one remote boundary of this module)."""
    from .store import RunReader

    reader = RunReader(client, run_id)
    run = reader.get_run()
    experiment = client.get_experiment(run.info.experiment_id)
    return RunData(
        run_id=run_id,
        name=run.info.run_name or "",
        status=run.info.status,
        experiment=experiment.name if experiment else run.info.experiment_id,
        metrics=reader.metrics(run),
        params=dict(run.data.params),
        tags=dict(run.data.tags),
        texts=reader.texts(run),
        tables=reader.tables(),
        images=reader.images(),
    )
