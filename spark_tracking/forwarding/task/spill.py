"""Frames a Python worker could not hand to the driver, kept on local disk until it can.

- One folder per local user, ``<tmp>/spark_tracking_spill-<uid>``, mode 0700; a folder that
  is a symlink, not a folder, or owned by someone else is refused (nothing spills; the points
  are counted as dropped with a warning).
- Files are written under a temporary name (mode 0600) and renamed when complete: a file
  under its final name is whole. A worker claims a file by renaming it to
  ``<name>.claimed.<pid>``; a claim whose process is gone is taken back.
- Files not owned by this user are never read (another local user cannot plant points that
  would be sent under this worker's session).
- ``max_bytes`` caps the folder; beyond it :class:`SpillFull` is raised (the caller counts).
- Reads are bounded: :meth:`SpillStore.claim` returns at most ``max_read_bytes`` of files.

A frame is the relay request (see :mod:`.protocol`, with its ``id``) plus the relay address;
the session secret is never written. File names start with a tag of their relay, so a
worker only claims files of drivers it knows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Iterable

from ..files import alive as _alive

logger = logging.getLogger(__name__)

_SUFFIX = ".jsonl"
_CLAIM = ".claimed."


class SpillFull(OSError):
    """The spill folder reached its cap (or cannot be used); nothing was written."""


def relay_tag(relay: str) -> str:
    """Spill files are named after their driver relay: a worker only claims files of drivers it
    knows (other Spark applications on the same node leave each other's files alone)."""
    return hashlib.sha1(relay.encode("utf-8")).hexdigest()[:16]


def default_folder() -> str:
    """``<tmp>/spark_tracking_spill-<uid>``: one folder per local user."""
    return os.path.join(tempfile.gettempdir(), f"spark_tracking_spill-{os.getuid()}")


def writer_pid(name: str) -> int | None:
    """The process that wrote a spill file, from its name (``<tag>-<time>-<pid>-<n>.jsonl``)."""
    parts = name.split("-")
    return int(parts[2]) if len(parts) == 4 and parts[2].isdigit() else None


def _lines(relay: str, frames: Iterable[dict]) -> bytes:
    return "".join(json.dumps(dict(frame, relay=relay), separators=(",", ":")) + "\n" for frame in frames).encode(
        "utf-8"
    )


def _ids(frames: list) -> list:
    return sorted(str(f.get("id")) for f in frames)


class Claimed:
    """Frames read from one claimed file; :meth:`SpillStore.done` or ``.release`` it."""

    __slots__ = ("frames", "path")

    def __init__(self, path: str, frames: list):
        self.path, self.frames = path, frames


class SpillStore:
    """The spill folder of this user. ``max_bytes``: the folder's cap; ``max_read_bytes``:
    what one :meth:`claim` reads at most."""

    def __init__(self, folder: str | None = None, max_bytes: int = 1 << 30, max_read_bytes: int = 16 << 20):
        self.folder = folder or default_folder()
        self.max_bytes = max_bytes
        self.max_read_bytes = max_read_bytes
        self._seq = 0
        self._checked = False

    # -- the folder --------------------------------------------------------------------------

    def _ready(self) -> str:
        if not self._checked:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.folder, 0o700)
            st = os.lstat(self.folder)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                raise SpillFull(
                    f"spill folder {self.folder} is not a folder owned by this user "
                    f"(uid {os.getuid()}); remove it or point TMPDIR elsewhere"
                )
            if stat.S_IMODE(st.st_mode) != 0o700:
                os.chmod(self.folder, 0o700)
            self._checked = True
        return self.folder

    def _entries(self) -> list[os.DirEntry]:
        try:
            return list(os.scandir(self._ready()))
        except FileNotFoundError:
            self._checked = False
            return list(os.scandir(self._ready()))

    def used_bytes(self) -> int:
        """Bytes the folder holds (complete, claimed and half-written files)."""
        total = 0
        for entry in self._entries():
            with contextlib.suppress(OSError):  # removed meanwhile by another worker
                total += entry.stat(follow_symlinks=False).st_size
        return total

    # -- writing -----------------------------------------------------------------------------

    def write(self, relay: str, frames: Iterable[dict]) -> int:
        """Write frames of one relay as one file, atomically; returns the bytes written.
        Raises :class:`SpillFull` over the cap, OSError when the disk refuses."""
        data = _lines(relay, frames)
        if not data:
            return 0
        folder = self._ready()
        if self.used_bytes() + len(data) > self.max_bytes:
            raise SpillFull(f"spill folder {folder} would pass its cap of {self.max_bytes} bytes")
        self._seq += 1
        name = f"{relay_tag(relay)}-{time.time_ns():020d}-{os.getpid()}-{self._seq}{_SUFFIX}"
        tmp = os.path.join(folder, f".{name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.rename(tmp, os.path.join(folder, name))
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        return len(data)

    # -- reading -----------------------------------------------------------------------------

    def claim(self, relays: Iterable[str], writer: int | None = None) -> list[Claimed]:
        """Claim files of these relays (ours or a dead worker's), oldest first, up to
        ``max_read_bytes``; with ``writer``, only files that process wrote. Files of other
        users are skipped with a warning."""
        tags = {relay_tag(r) for r in relays}
        if not tags:
            return []
        uid = os.getuid()
        candidates = []
        for entry in self._entries():
            name = entry.name
            if name[:16] not in tags:
                continue
            if name.endswith(_SUFFIX):
                if writer is None or writer_pid(name) == writer:
                    candidates.append(entry)
            elif _CLAIM in name and not _alive(name.rsplit(".", 1)[-1]):
                self._take_back(entry.path)  # its worker died while sending it
        out: list[Claimed] = []
        budget = self.max_read_bytes
        for entry in sorted(candidates, key=lambda e: e.name[17:]):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_uid != uid or not stat.S_ISREG(st.st_mode):
                logger.warning("spark_tracking: ignored spill file %s: not a file of this user", entry.path)
                continue
            if out and st.st_size > budget:
                break
            claimed = f"{entry.path}{_CLAIM}{os.getpid()}"
            try:
                os.rename(entry.path, claimed)
            except OSError:
                continue  # another worker took it
            frames = self._read(claimed)
            if frames is None:
                continue
            out.append(Claimed(claimed, frames))
            budget -= st.st_size
        return out

    def _read(self, path: str) -> list | None:
        frames = []
        try:
            with open(path, "rb") as fh:
                for line in fh:
                    try:
                        frame = json.loads(line)
                    except ValueError:
                        continue  # never written whole files; ignore damage, keep the rest
                    if isinstance(frame, dict) and isinstance(frame.get("relay"), str):
                        frames.append(frame)
        except OSError:
            logger.warning("spark_tracking: spill file %s could not be read", path, exc_info=True)
            return None
        return frames

    def done(self, claimed: Claimed) -> None:
        """The frames of a claimed file reached the driver (or were dropped with a count)."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(claimed.path)

    def release(self, claimed: Claimed, frames: list | None = None) -> None:
        """Give a claimed file back: whole (``frames`` None, or the same requests as it holds:
        nothing of it reached the driver), or only ``frames`` of it, the unsent rest (with the
        relay), rewritten under the file's name. Requests are told apart by their ids: what the
        driver acknowledged is never given back to be sent again."""
        if frames is None or _ids(frames) == _ids(claimed.frames):
            self._take_back(claimed.path)
            return
        if not frames:
            self.done(claimed)
            return
        data = _lines(frames[0]["relay"], [{k: v for k, v in f.items() if k != "relay"} for f in frames])
        final = claimed.path.split(_CLAIM, 1)[0]
        tmp = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.tmp")
        try:  # the rest is smaller than the file: no cap to check; whole under its final name
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.rename(tmp, final)
        except OSError:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            logger.warning(
                "spark_tracking: could not rewrite the unsent rest of spill file %s; it is kept whole "
                "(the driver may receive %d acknowledged requests again)",
                final,
                len(claimed.frames) - len(frames),
                exc_info=True,
            )
            self._take_back(claimed.path)
            return
        self.done(claimed)

    def _take_back(self, path: str) -> None:
        with contextlib.suppress(OSError):
            os.rename(path, path.split(_CLAIM, 1)[0])

    def has_files(self, relays: Iterable[str], writer: int | None = None) -> bool:
        """True when complete files of these relays (written by ``writer``, if given) are waiting."""
        tags = {relay_tag(r) for r in relays}
        return any(name[:16] in tags and (writer is None or writer_pid(name) == writer) for name in self.files())

    def files(self) -> list[str]:
        """Names of complete spill files (for tests and ``stats``)."""
        return sorted(e.name for e in self._entries() if e.name.endswith(_SUFFIX))
