"""What runs on the driver, where the notebook runs (see ``spark_tracking.forwarding``).

Imports only the ground floor (``protocol``, ``records``, ``files``), never ``task/``."""
