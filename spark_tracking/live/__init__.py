"""A live view of a run whose metrics are logged inside Spark tasks (``spark_tracking.RunDetails``).

Azure ML's ``RunDetails(run).show()`` for Spark: in a notebook, per metric a curve per worker
and their mean, the latest values, the forwarding counters, the run's status and link,
refreshed about once a second from what the driver relay receives while the next cell runs
the Spark job. See ``details.RunDetails`` and docs/live-view.md.

- ``model``: the bounded per-run state (pure data)
- ``details``: the controller (observer, refresh thread, run status)
- ``notebook``: the ipywidgets + matplotlib frontend; ``text``: the terminal one
"""

from .details import RunDetails

__all__ = ["RunDetails"]
