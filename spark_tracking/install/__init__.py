"""Put spark_tracking on a Databricks cluster.

- ``node``: the helpers the init script runs with the cluster Python (missing requirements,
  constraints, config file, driver check). Standard library and ``spark_tracking.config`` only.
- ``plan``: pure logic — the change to a cluster spec that install and uninstall make.
- ``workspace``: the thin databricks-sdk boundary (clusters, files, secrets).
- ``installer``: install/uninstall as plans: read (GET only), then describe or carry out steps.
- ``cli``: ``spark-tracking install`` / ``spark-tracking uninstall``.

The init script itself is ``init_scripts/spark-tracking-init.sh`` in the repository, shipped in
the wheel as ``spark_tracking/resources/spark-tracking-init.sh``.
"""
