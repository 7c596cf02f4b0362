"""A guarded ffmpeg/ffprobe child: argument list, no stdin, stderr drained, timeout, group kill."""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import threading
from typing import Sequence

STDERR_TAIL_BYTES = 1024
# A bigger stdout pipe lets ffmpeg decode ahead while Python encodes (the default 64 KB holds
# less than two 112x112 rgb frames, which keeps the two processes in lockstep).
PIPE_BYTES = 1 << 20


class ToolProcess:
    """Runs one command with stdout on a pipe and guarantees the process is gone on close.

    The child gets its own process group (so a kill reaches anything it spawned), stdin from
    /dev/null, and a thread that drains stderr, keeping only the last `STDERR_TAIL_BYTES`: a
    chatty ffmpeg would otherwise fill the stderr pipe and block while we wait on stdout.
    A timer kills the group after `timeout` seconds of wall clock. Use as a context manager.

    Args:
      args: the command as an argument list (never a shell string).
      timeout: wall-clock seconds before the process group is killed; None for no limit.
    """

    def __init__(self, args: Sequence[str], timeout: float | None):
        self.args = list(args)
        self.timed_out = False
        self._tail = b""
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        try:
            fcntl.fcntl(self.proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except (AttributeError, OSError):  # not Linux, or above /proc/sys/fs/pipe-max-size
            pass
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()
        self._timer = None
        if timeout is not None:
            self._timer = threading.Timer(timeout, self._on_timeout)
            self._timer.daemon = True
            self._timer.start()

    @property
    def stdout(self):
        return self.proc.stdout

    def _drain_stderr(self) -> None:
        for chunk in iter(lambda: self.proc.stderr.read(4096), b""):
            with self._lock:
                self._tail = (self._tail + chunk)[-STDERR_TAIL_BYTES:]

    def _on_timeout(self) -> None:
        self.timed_out = True
        self.kill()

    def kill(self) -> None:
        """Kills the whole process group; a no-op once the process has been reaped."""
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def stderr_tail(self) -> str:
        """The last <= 1 KB of stderr, decoded leniently (ffmpeg echoes raw file names)."""
        with self._lock:
            tail = self._tail
        return tail.decode("utf-8", "replace")

    def close(self) -> int:
        """Stops the process if still running, reaps it, and returns its exit status."""
        if self._timer is not None:
            self._timer.cancel()
        if self.proc.poll() is None:
            self.kill()
        rc = self.proc.wait()
        self._drain.join(timeout=5)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return rc

    def __enter__(self) -> "ToolProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_tool(args: Sequence[str], timeout: float | None) -> tuple[int, bytes, str, bool]:
    """Runs a command to completion.

    Returns:
      (exit status, all of stdout, stderr tail, whether it was killed by the timeout).
    """
    with ToolProcess(args, timeout) as tp:
        out = tp.stdout.read()
        rc = tp.close()
        return rc, out, tp.stderr_tail(), tp.timed_out
