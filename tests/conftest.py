"""Shared pytest fixtures: tiny generated videos, and the CPU settings of the in-process trainings."""
from __future__ import annotations

import pytest

from tests import videos
from tests.helpers import ROOT, cli, read_dataset  # noqa: F401  (helpers live in tests/helpers.py; old imports)
from trainer import cpu

# The tests that train in this process get the CPU settings `clipforge train` chooses (oneDNN on
# AVX2 machines too); they must be made before anything imports TensorFlow.
cpu.choose()


@pytest.fixture(scope="session")
def index_clip(tmp_path_factory) -> str:
    """A 12-frame 16x16 gray lossless clip at 10 fps whose frame i has value index_value(i)."""
    return videos.make_video(str(tmp_path_factory.mktemp("clips") / "index12.mkv"), frames=12)


