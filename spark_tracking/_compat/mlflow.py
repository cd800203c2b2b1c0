"""Every touch of an MLflow private, one function each, with the versions it was checked on."""

from __future__ import annotations

import sys


def fluent_start_run_arguments() -> dict | None:
    """The arguments of the ``mlflow.start_run`` call that is creating a run right now (its
    frame's locals: ``nested``, ``run_name``, ``tags``, ``experiment_id``, ``parent_run_id``,
    ``description``), or None when the run is not created by ``mlflow.start_run`` (an
    ``MlflowClient().create_run`` call). MLflow passes none of them to the store, and
    ``start_run(nested=True)`` with no active run reaches the store exactly as
    ``start_run()`` does.

    Checked on MLflow 2.9.2, 3.0.1 and 3.17.2 (``mlflow.tracking.fluent.start_run``)."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "start_run" and frame.f_globals.get("__name__") == "mlflow.tracking.fluent":
            return dict(frame.f_locals)
        frame = frame.f_back
    return None


def tracking_store(client):
    """The tracking store behind an ``MlflowClient`` (MLflow has no public accessor).

    Checked on MLflow 2.9.2, 3.0.1 and 3.17.2 (``MlflowClient._tracking_client.store``)."""
    return client._tracking_client.store


def active_run_stack() -> list:
    """This thread's stack of fluent runs (MLflow pushes and pops it in place).

    Checked on MLflow 2.9.2 (a module-level list), 3.0.1 and 3.17.2 (a thread-local
    ``_active_run_stack.get()``)."""
    from mlflow.tracking import fluent

    stack = fluent._active_run_stack
    return stack if isinstance(stack, list) else stack.get()


def run_with_inputs(run):
    """``run`` with empty inputs (and outputs, where MLflow has them) instead of None: MLflow
    3.0.x's fluent ``log_metric`` reads ``run.inputs.dataset_inputs`` unguarded.

    Checked on MLflow 2.9.2 (``Run(info, data, inputs)``), 3.0.1 and 3.17.2
    (``Run(info, data, inputs, outputs)``)."""
    from mlflow.entities import Run, RunInputs

    if run.inputs is not None:
        return run
    inputs = RunInputs(dataset_inputs=[])
    try:
        from mlflow.entities import RunOutputs
    except ImportError:  # MLflow 2
        return Run(run.info, run.data, inputs)
    return Run(run.info, run.data, inputs, run.outputs if run.outputs is not None else RunOutputs(model_outputs=[]))


def register_tracking_store(scheme: str, builder) -> None:
    """Register a tracking store for a URI scheme in this process (what the
    ``mlflow.tracking_store`` entry points do at import), e.g. a do-nothing store to measure
    MLflow's own cost.

    Checked on MLflow 2.9.2, 3.0.1 and 3.17.2 (``_tracking_service.utils._tracking_store_registry``)."""
    from mlflow.tracking._tracking_service import utils

    utils._tracking_store_registry.register(scheme, builder)
