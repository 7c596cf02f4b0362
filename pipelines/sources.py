"""Where both jobs start: ReadVideos, the set-up every video DoFn shares, and routing by kind."""
from __future__ import annotations

import shutil
import tempfile

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.decoder import DecoderError, resolve
from pipelines.inputs import VideoRef

RECORD, WINDOW, SUMMARY, DEAD_LETTER = "records", "windows", "summary", "dead_letter"


SIGNALS = "signals"


SEGMENT, PART = "segment", "part"


# DoFns emit (kind, value) pairs that are then split with one filter per kind, rather than
# TaggedOutputs or Partition: Beam's DaskRunner does not route multiple outputs apart.
def only(item: tuple, kind: str):
    if item[0] == kind:
        yield item[1]


def split_by_kind(tagged, kinds: tuple[str, ...], stage: str = "") -> dict:
    return {kind: tagged | f"{stage}Only[{kind}]" >> beam.FlatMap(only, kind) for kind in kinds}


class ReadVideos(beam.PTransform):
    """Starts the pipeline from the listed videos: PBegin -> PCollection[VideoRef]."""

    def __init__(self, refs: list[VideoRef]):
        super().__init__()
        self.refs = refs

    def expand(self, pbegin):
        # Create re-shuffles its elements, so videos spread over workers from the start.
        return pbegin | "List" >> beam.Create(self.refs)


class VideoFn(beam.DoFn):
    """Shared worker set-up: the decoder must run here and be the build the launcher named, and a
    scratch dir for remote copies.

    Attributes (set by subclasses):
      decoder: bundled | system.
      build: the launcher's `Decoder.describe()` (what metadata.json records), or None.
    """

    decoder, build = "bundled", None

    def setup(self):
        try:
            self.ffmpeg = resolve(self.decoder)
        except DecoderError as e:
            raise RuntimeError(f"on this worker: {e}") from None
        if self.build and not self.ffmpeg.same_build(self.build):
            raise RuntimeError(f"this worker's {self.decoder} decoder is {self.ffmpeg.version!r}, but the launcher's "
                               f"(named in metadata.json) is {self.build.get('version')!r} with another build; "
                               "install the same clipforge (and imageio-ffmpeg) on the workers as on the launcher")
        self.scratch = tempfile.mkdtemp(prefix="clipforge-")
        self.dead = Metrics.counter("clipforge", "videos_dead_lettered")

    def teardown(self):
        shutil.rmtree(getattr(self, "scratch", ""), ignore_errors=True)
