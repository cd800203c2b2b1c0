"""What runs in a Spark task, or in a process a task starts (see ``spark_tracking.forwarding``).

Imports only the ground floor (``protocol``, ``records``, ``files``), never ``driver/``."""
