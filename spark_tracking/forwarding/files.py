"""Claimable files shared by the two sides: a file claimed by a process carries its pid in its
name, and a claim whose process is gone may be taken over (the task's spill, the driver's spool)."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists (a claim it holds is still being worked on)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def alive(pid_text: str) -> bool:
    """``pid_alive`` of a pid read from a file name (False when it is not a number)."""
    try:
        return pid_alive(int(pid_text))
    except ValueError:
        return False
    return True
