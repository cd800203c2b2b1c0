"""Forwarding of logging calls made inside Spark tasks to the run active on the driver.

executor.py (task side: hot path, shipper) → relay.py (driver: authenticated TCP server) →
sink.py (driver: batching, aggregation, retries, spool) → the store. driver.py wires them;
task_store.py routes plain MLflow calls in Spark Python workers into executor.py.
"""
