"""Directories on a local file system: replaced whole by two renames, and owned by a live process.

`swap_in` is the one way clipforge replaces a finished directory (a dataset, a predict output, an
export): readers see the complete old one or the complete new one, never a mixture. `owner_gone`
reads the owner records ({"host", "pid"}) that staging directories and run locks leave behind.
"""
from __future__ import annotations

import os
import shutil
import socket
from typing import Optional


def swap_in(new: str, target: str, old: Optional[str] = None) -> None:
    """Replaces directory `target` by directory `new` (same file system).

    The old `target` is renamed aside to `old` (default `new + ".old"`), `new` is renamed in, then
    the old one is deleted. If the second rename fails, the old one goes back. Between the two
    renames `target` is briefly absent; a process killed there leaves both `new` and `old`, from
    which a later run can restore (pipelines/staging.py `remove_abandoned`).
    """
    old = old or f"{new}.old"
    moved = os.path.exists(target)
    if moved:
        os.rename(target, old)
    try:
        os.rename(new, target)
    except OSError:
        if moved:
            os.rename(old, target)
        raise
    if moved:
        shutil.rmtree(old, ignore_errors=True)


def owner_gone(owner: dict) -> bool:
    """Whether the process an owner record names ({"host", "pid"}, written by a run that holds a
    directory or a lock) ran on this machine and is no longer running.

    Another machine's process (a shared file system) cannot be checked, so it counts as alive;
    a record without a usable pid counts as alive too.
    """
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, KeyError, TypeError):  # PermissionError: alive under another user
        return False
    return False
