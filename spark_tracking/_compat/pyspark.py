"""Every use of a PySpark private or undocumented name, each saying the versions it was checked on."""

from __future__ import annotations

import sys


def connect_session():
    """The Spark Connect client session of this thread, else the process's default one, else None.

    ``pyspark.sql.connect.session.SparkSession.active()``; looked at only when the Connect client
    is already imported (it needs grpc). Checked on pyspark 4.0.0 and 4.3.0."""
    module = sys.modules.get("pyspark.sql.connect.session")
    if module is None:
        return None
    try:
        session = module.SparkSession.active()
    except Exception:  # no active or default session
        return None
    return None if getattr(session, "is_stopped", False) else session


def connect_server_host(session) -> str | None:
    """Host name of the Spark Connect server a client session talks to (``session.client.host``,
    undocumented). Checked on pyspark 4.0.0 and 4.3.0."""
    try:
        return session.client.host
    except Exception:
        return None
