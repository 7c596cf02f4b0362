"""Run a training command in a subprocess and SIGKILL it once its backup reaches an epoch."""
from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time


def backup_epoch(path: str) -> int:
    """The epoch recorded in a BackupAndRestore training_metadata.json."""
    with open(path) as f:
        return json.load(f)["epoch"]


def kill_after_backup(cmd: list[str], env: dict, cwd: str, state: str, min_epoch: int,
                      timeout: float = 240) -> None:
    """Starts CMD, waits until STATE records epoch >= MIN_EPOCH, then SIGKILLs it.

    Raises:
      AssertionError: the run ended on its own before it could be killed.
    """
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError, ValueError, KeyError):  # not written yet, or mid-write
                if backup_epoch(state) >= min_epoch:
                    break
            time.sleep(0.02)
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
