"""Forwarding of logging calls made inside Spark tasks to the run active on the driver.

Two sides, in two folders that never import each other:

- ``task/`` runs in a Spark task or a process it starts (a torchrun rank, a subprocess):
  ``executor`` (the log calls, task start and end) → ``shipper`` (background thread, framing,
  transport) with ``spill`` (what the relay cannot take yet); ``binding`` (where points go);
  ``store`` and ``artifacts`` (plain MLflow calls in a task, through MLflow's plugin registries);
  ``run_requests`` (run operations asked of the driver); ``connect`` (the Spark Connect tag
  reader and drop files).
- ``driver/`` runs where the notebook runs: ``forwarder`` wires a ``relay`` (authenticated TCP
  server) to a ``sink`` (batching, per-worker aggregation, retries, spool) and ``run_ops`` (the run
  operations tasks ask for); ``connect`` (the Spark Connect client), ``observers``, ``replay``.

The ground floor both import: ``protocol`` (every wire and property name, frames, the Connect tag
codec), ``records`` (MLflow entities on the wire), ``files`` (claimable files of spill and spool).
"""
