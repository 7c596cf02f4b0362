"""A guarded ffmpeg/ffprobe child: argument list, no stdin, stderr drained, timeout, group kill."""
from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from typing import Iterable, Sequence

STDERR_TAIL_BYTES = 1024
# A bigger stdout pipe lets ffmpeg decode ahead while Python encodes (the default 64 KB holds
# less than two 112x112 rgb frames, which keeps the two processes in lockstep).
PIPE_BYTES = 1 << 20
# With `-loglevel level+info` every line starts with its contexts and its level: "[h264 @ 0x..] [error] ...".
_LEVEL = re.compile(rb"(?:\[[^\]\n]* @ 0x[0-9a-fA-F]+\] )*\[(trace|debug|verbose|info|warning|error|fatal|panic)\] ")
_ERROR_LEVELS = (b"error", b"fatal", b"panic")
HEADER_END = b"[info] Stream mapping:"  # ffmpeg prints it after the input dump, as decoding starts
HEAD_BYTES = 64 << 10


@functools.lru_cache(maxsize=1)
def die_with_parent_prefix() -> tuple[str, ...]:
    """`setpriv --pdeathsig KILL --` where util-linux has it (Linux), else () (no such guard).

    The child runs in its own session, so a worker killed with SIGKILL (the OOM killer, a
    preempted job, `kill -9`) would otherwise leave ffmpeg decoding on as an orphan; with the
    death signal the kernel kills it when the thread that started it dies. setpriv sets it
    and execs the tool, so Python keeps its vfork fast path: a preexec_fn would fork the whole
    multi-threaded worker (Beam's gRPC threads included) for every video.
    """
    exe = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if not exe:
        return ()
    try:
        usage = subprocess.run([exe, "--help"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return (exe, "--pdeathsig", "KILL", "--") if "--pdeathsig" in usage else ()


class ToolProcess:
    """Runs one command with stdout on a pipe and guarantees the process is gone on close.

    The child gets its own process group (so a kill reaches anything it spawned), stdin from
    /dev/null, a death signal tied to this thread (so it cannot outlive a killed worker),
    and a thread that drains stderr, keeping only the last `STDERR_TAIL_BYTES`: a chatty
    ffmpeg would otherwise fill the stderr pipe and block while we wait on stdout. A timer
    kills the group after `timeout` seconds of wall clock; `close` kills it too, whether the
    child ended, failed or is still running, before reaping it. Use as a context manager.

    With `header=True` the child is an ffmpeg run at `-loglevel level+info`: the lines before
    HEADER_END (its input dump: container, duration, streams) are kept apart for `header()`,
    and only lines at level error and above go to the stderr tail, without their level tag,
    as `-loglevel error` would print them.

    Args:
      args: the command as an argument list (never a shell string).
      timeout: wall-clock seconds before the process group is killed; None for no limit.
      header: split ffmpeg's stderr into its input dump and its errors (see above).
      feed: chunks of bytes written to the child's stdin by a thread (then stdin is closed);
        None: stdin is /dev/null. Used for frame folders, whose images clipforge reads itself.
    """

    def __init__(self, args: Sequence[str], timeout: float | None, header: bool = False,
                 feed: Iterable[bytes] | None = None):
        self.args = list(args)
        self.timed_out = False
        self._tail = b""
        self._head: list[bytes] = []
        self._head_bytes = 0
        self._header_done = threading.Event()
        self._lock = threading.Lock()
        self._reap_lock = threading.Lock()  # a group is never signalled after its leader is reaped
        self.proc = subprocess.Popen([*die_with_parent_prefix(), *self.args],
                                     stdin=subprocess.DEVNULL if feed is None else subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.feed_error: BaseException | None = None
        self._writer = None
        if feed is not None:
            self._writer = threading.Thread(target=self._write, args=(feed,), daemon=True)
            self._writer.start()
        if not header:  # a header is checked first: until then ffmpeg can only run a small pipe ahead
            self.widen_pipe()
        self._drain = threading.Thread(target=self._drain_levels if header else self._drain_stderr, daemon=True)
        self._drain.start()
        self._timer = None
        if timeout is not None:
            self._timer = threading.Timer(timeout, self._on_timeout)
            self._timer.daemon = True
            self._timer.start()

    def _write(self, feed: Iterable[bytes]) -> None:
        chunks = iter(feed)
        try:
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return
                except BaseException as e:  # noqa: BLE001 - e.g. a frame that cannot be read: the reader re-raises it
                    self.feed_error = e
                    self.kill()
                    return
                try:
                    self.proc.stdin.write(chunk)
                except (BrokenPipeError, ValueError, OSError):
                    return  # the child stopped reading (killed, or it failed): its status tells why
        finally:
            with contextlib.suppress(OSError, ValueError):
                self.proc.stdin.close()

    def widen_pipe(self) -> None:
        """Lets the child write PIPE_BYTES ahead of the reader."""
        # not Linux, or above /proc/sys/fs/pipe-max-size: keep the default pipe size
        with contextlib.suppress(AttributeError, OSError):
            fcntl.fcntl(self.proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)

    @property
    def stdout(self):
        return self.proc.stdout

    def _drain_stderr(self) -> None:
        for chunk in iter(lambda: self.proc.stderr.read(4096), b""):
            with self._lock:
                self._tail = (self._tail + chunk)[-STDERR_TAIL_BYTES:]

    def _drain_levels(self) -> None:
        pending = b""  # read1: what is there now, so the header is seen as soon as it is written
        for chunk in iter(lambda: self.proc.stderr.read1(4096), b""):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self._line(line)
        if pending:
            self._line(pending)
        self._header_done.set()

    def _line(self, line: bytes) -> None:
        if not self._header_done.is_set():
            self._head.append(line)
            self._head_bytes += len(line) + 1
            if line == HEADER_END or self._head_bytes > HEAD_BYTES:
                self._header_done.set()
        m = _LEVEL.match(line)
        if m and m.group(1) in _ERROR_LEVELS:
            with self._lock:
                self._tail = (self._tail + line[:m.start(1) - 1] + line[m.end():] + b"\n")[-STDERR_TAIL_BYTES:]

    def header(self, timeout: float | None) -> bytes | None:
        """The child's stderr up to HEADER_END (or all of it, if it ended first); None if TIMEOUT
        seconds passed without it."""
        if not self._header_done.wait(timeout):
            return None
        return b"\n".join(self._head)

    def _on_timeout(self) -> None:
        with self._reap_lock:
            if not self._exited():  # a child that already finished did not time out
                self.timed_out = True
                self._kill_group()

    def _exited(self) -> bool:
        """Whether the child has ended, without reaping it (so its pid stays reserved)."""
        if self.proc.returncode is not None:
            return True
        if not hasattr(os, "waitid"):
            return self.proc.poll() is not None
        try:
            return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def kill(self) -> None:
        """Kills the whole process group; a no-op once the process has been reaped.

        Until the leader is reaped its pid (the group id) cannot be reused, so the signal can
        only reach this child and what it spawned.
        """
        with self._reap_lock:
            self._kill_group()

    def _kill_group(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def stderr_tail(self) -> str:
        """The last <= 1 KB of stderr, decoded leniently (ffmpeg echoes raw file names)."""
        with self._lock:
            tail = self._tail
        return tail.decode("utf-8", "replace")

    def close(self, wait: bool = False) -> int:
        """Ends the child, reaps it and returns its exit status (negative: killed by a signal).

        Args:
          wait: let the child exit by itself first, still bounded by the timeout (its stdout
            reached EOF, so it is finishing and its exit status matters); otherwise it is
            killed at once (the reader stopped early or failed).

        Either way the whole process group is killed before the reap, so nothing the child
        spawned outlives it; a child that already exited keeps its own status.
        """
        if wait and self.proc.returncode is None:
            if hasattr(os, "waitid"):
                # wait without reaping: the group id stays reserved for the kill below
                with contextlib.suppress(ChildProcessError):
                    os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)
            else:
                self.proc.wait()
        if self._timer is not None:
            self._timer.cancel()
        with self._reap_lock:
            self._kill_group()
            rc = self.proc.wait()
        self._drain.join(timeout=5)
        if self._writer is not None:
            self._writer.join(timeout=5)
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
        rc = tp.close(wait=True)
        return rc, out, tp.stderr_tail(), tp.timed_out
