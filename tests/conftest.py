"""Shared pytest fixtures and helpers: tiny generated videos and reading datasets back."""
from __future__ import annotations

import os
import sys

import pytest

from tests import videos
from trainer import cpu

# The tests that train in this process get the CPU settings `clipforge train` chooses (oneDNN on
# AVX2 machines too); they must be made before anything imports TensorFlow.
cpu.choose()

# Subprocesses (the CLI tests) import the project from this checkout.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def index_clip(tmp_path_factory) -> str:
    """A 12-frame 16x16 gray lossless clip at 10 fps whose frame i has value index_value(i)."""
    return videos.make_video(str(tmp_path_factory.mktemp("clips") / "index12.mkv"), frames=12)


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


def cli(*args: str, env: dict | None = None):
    """Runs `python -m clipforge.cli ARGS` in a subprocess from the checkout."""
    import subprocess
    full_env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    return subprocess.run([sys.executable, "-m", "clipforge.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=ROOT, timeout=120)
