"""Helpers shared by test modules (pytest advises against importing conftest)."""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys

# Subprocesses (the CLI tests) import the project from this checkout.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_dataset(directory: str) -> dict:
    """Reads every shard of a finished dataset with TFRecord framing checks and the codec.

    Returns:
      {split: [decoded record dict, ...]} in shard order.
    """
    from schemas.codec import RecordCodec
    from schemas.metadata import DatasetMetadata
    from schemas.tfrecord import iter_records
    meta = DatasetMetadata.load(directory)
    codec = RecordCodec(meta.spec, meta.target)
    return {split: [codec.decode_numpy(r) for path in meta.shard_paths(directory, split)
                    for r in iter_records(path, meta.compression)]
            for split in meta.splits}


def ingest(*argv: str) -> tuple[int, str]:
    """Runs `clipforge ingest ARGV` in-process; returns (exit status, what it printed on stdout)."""
    from pipelines.ingest import run
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = run(list(argv))
    return rc, buf.getvalue()


def validate_run(directory: str) -> tuple[int, str, str]:
    """Runs `clipforge validate DIRECTORY` in-process; returns (exit status, stdout, stderr)."""
    from clipforge import validate
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = validate.run([directory])
    return rc, out.getvalue(), err.getvalue()


def cli(*args: str, env: dict | None = None):
    """Runs `python -m clipforge.cli ARGS` in a subprocess from the checkout."""
    full_env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    return subprocess.run([sys.executable, "-m", "clipforge.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=ROOT, timeout=120)


def unexplained_flags(parser: argparse.ArgumentParser, help_text: str) -> list[str]:
    """The parser's long flags that `--help` does not list with the start of their help string.

    The flags come from the parser itself, so a new flag without help, or one the help text leaves
    out, is reported; argparse wraps lines, so whitespace is normalised before comparing.
    """
    text = " ".join(help_text.split())
    missing = []
    for action in parser._actions:
        flags = [f for f in action.option_strings if f.startswith("--")]
        if not flags or flags == ["--help"]:
            continue
        words = " ".join((action.help or "").split()[:3])
        if not words or action.help == argparse.SUPPRESS or flags[0] not in text or words not in text:
            missing.append(flags[0])
    return missing


def process_video(ref, job, scratch_dir: str):
    """One video through ingest's per-video engine without Beam: MakeRecords' plan, decode and finish steps.

    Yields:
      (split, serialized record) per window as it fills; then one VideoSummary (the video wrote
      records) or one DeadLetter (it wrote none).
    """
    from pipelines.dead_letters import DeadLetter
    from pipelines.ingest.engine import SegmentResult, finish_video, plan_video, process_segment
    planned = list(plan_video(ref, job))
    if planned and isinstance(planned[0], DeadLetter):
        yield planned[0]
        return
    results = []
    for segment in planned:
        for out in process_segment(segment, job, scratch_dir):
            if isinstance(out, SegmentResult):
                results.append(out)
            else:
                yield out
    yield finish_video(results, job)


def decode_all(path: str, spec, resize: str = "stretch", timeout: float = 600):
    """Decodes a whole (short) video to a (N, H, W, C) uint8 array through ingest's frame stream."""
    import numpy as np

    from pipelines.decode import FrameStream
    frames = list(FrameStream(path, spec, resize, timeout))
    return np.stack(frames) if frames else np.zeros((0,) + spec.frame_shape, np.uint8)
