"""The sink's durable spool: a bounded folder of ``log_batch`` requests the store has not taken
yet, shared by every process on the driver (sinks and ``spark-tracking replay``)."""

from __future__ import annotations

import contextlib
import json
import os
import time

from ..files import pid_alive


class Spool:
    """Durable, bounded folder of requests the store has not taken yet (JSON files).

    Each file is written to a temporary name, fsynced and renamed, so a crash of the driver
    leaves whole files only. ``spark-tracking replay`` (or the next sink) delivers them; the
    timestamps inside are those of the original log calls, so a replay is idempotent in
    MLflow's SQL store. Files hold no secrets (the tracking URI is stored without user info).

    Several processes may drain one folder (two notebooks on a driver, ``replay`` during a
    job): a process claims a file by renaming it to ``<name>.claim-<pid>`` before reading it
    (atomic: one process wins, the other skips it), deletes it once the store took it and
    renames it back when the store could not be reached. A claim whose process is gone is
    claimed again. Files the store refused are moved to ``refused/`` with the reason beside.
    """

    def __init__(self, directory: str, max_bytes: int):
        self.directory = directory
        self.max_bytes = max_bytes
        self._n = 0

    def used_bytes(self) -> int:
        """Bytes the spooled files take (claimed ones included); 0 when the folder does not exist."""
        try:
            return sum(e.stat().st_size for e in os.scandir(self.directory) if _spooled_name(e.name))
        except FileNotFoundError:
            return 0

    def write(self, request: dict) -> str | None:
        """Write ``request`` as a new spool file (fsynced, then renamed into place) and return its
        path; None, writing nothing, when it would take the folder past ``max_bytes``."""
        body = json.dumps(request).encode("utf-8")
        if self.used_bytes() + len(body) > self.max_bytes:
            return None
        os.makedirs(self.directory, exist_ok=True)
        self._n += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._n:06d}.json"
        tmp = os.path.join(self.directory, "." + name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        path = os.path.join(self.directory, name)
        os.replace(tmp, path)
        return path

    def files(self) -> list[str]:
        """Files to deliver, oldest first: unclaimed ones and claims of processes that are gone."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            original = _spooled_name(name)
            if original and (original == name or not pid_alive(int(name.rsplit("-", 1)[1]))):
                found.append((original, name))
        return [os.path.join(self.directory, name) for _, name in sorted(found)]

    def claim(self, path: str) -> str | None:
        """Take a file for this process; None when another process took it first."""
        original = _spooled_name(os.path.basename(path))
        claimed = os.path.join(self.directory, f"{original}.claim-{os.getpid()}")
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            return None
        return claimed

    def release(self, claimed: str) -> None:
        """Give a claimed file back (the store could not be reached)."""
        with contextlib.suppress(FileNotFoundError):
            os.rename(claimed, os.path.join(self.directory, _claimed_name(claimed)))

    def remove(self, claimed: str) -> None:
        """The store took a claimed file."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(claimed)

    def set_aside(self, claimed: str, reason: str) -> str:
        """Move a claimed file the store refused to ``refused/`` (with ``<name>.reason.txt``)."""
        folder = os.path.join(self.directory, "refused")
        os.makedirs(folder, exist_ok=True)
        target = os.path.join(folder, _claimed_name(claimed))
        with open(target + ".reason.txt", "w", encoding="utf-8") as fh:
            fh.write(reason + "\n")
        os.replace(claimed, target)
        return target

    def write_aside(self, name: str, request: dict, reason: str) -> str:
        """Write the part of spool file ``name`` the store cannot take to ``refused/`` (with
        ``<name>.reason.txt``), as ``set_aside`` does for a whole file."""
        folder = os.path.join(self.directory, "refused")
        os.makedirs(folder, exist_ok=True)
        target = os.path.join(folder, name)
        with open(target + ".reason.txt", "w", encoding="utf-8") as fh:
            fh.write(reason + "\n")
        with open(target, "w", encoding="utf-8") as fh:
            json.dump(request, fh)
        return target

    @staticmethod
    def read(path: str) -> dict:
        """The request a spool file holds."""
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)


def _spooled_name(name: str) -> str | None:
    """The spool file a directory entry stands for (itself or its claim), else None."""
    if name.endswith(".json") and not name.startswith("."):
        return name
    base, sep, pid = name.rpartition(".claim-")
    if sep and base.endswith(".json") and pid.isdigit():
        return base
    return None


def _claimed_name(claimed: str) -> str:
    """The spool file a claim (made by ``Spool.claim``) stands for."""
    name = _spooled_name(os.path.basename(claimed))
    assert name is not None, claimed
    return name


def strip_userinfo(uri: str) -> str:
    """``uri`` without user name and password (``https://user:pw@host/`` becomes ``https://host/``)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return uri
