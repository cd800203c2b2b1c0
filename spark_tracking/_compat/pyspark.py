"""Every use of a PySpark private or undocumented name, each saying the versions it was checked on."""

from __future__ import annotations

import sys


def connect_session(this_thread_only: bool = False):
    """The Spark Connect client session of this thread, else (unless ``this_thread_only``) the
    process's default one, else None.

    ``pyspark.sql.connect.session.SparkSession.getActiveSession()`` / ``.active()``; looked at
    only when the Connect client is already imported (it needs grpc). Checked on pyspark 4.0.0
    and 4.3.0."""
    module = sys.modules.get("pyspark.sql.connect.session")
    if module is None:
        return None
    try:
        cls = module.SparkSession
        session = cls.getActiveSession() if this_thread_only else cls.active()
    except Exception:  # noqa: BLE001 - no active or default session (PySparkRuntimeError)
        return None
    return None if getattr(session, "is_stopped", False) else session


def connect_server_host(session) -> str | None:
    """Host name of the Spark Connect server a client session talks to (``session.client.host``,
    undocumented). Checked on pyspark 4.0.0 and 4.3.0."""
    try:
        return session.client.host
    except Exception:  # noqa: BLE001 - an undocumented name: missing in some version
        return None
