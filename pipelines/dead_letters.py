"""Dead letters: a video that produced nothing, and why; written one JSON line each by both jobs."""
from __future__ import annotations

import dataclasses
import json
from typing import Optional

import apache_beam as beam

from pipelines.inputs import VideoRef
from pipelines.probe import VideoError
from schemas.metadata import DEAD_LETTER_FILE


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One line of dead_letter.jsonl: a video that produced no records, and why.

    Attributes:
      path, video_id: the video.
      stage: read | labels | probe | decode | window.
      reason: a sentence for people.
      kind: a short stable code, counted in the summary (e.g. no_label, too_short).
      stderr: the last <= 1 KB of ffmpeg/ffprobe stderr, when a tool failed.
      facts, sha256, frames: what is known of the video when it got that far (for videos.parquet,
        not written to dead_letter.jsonl).
    """

    path: str
    video_id: str
    stage: str
    reason: str
    kind: str
    stderr: str = ""
    facts: Optional[dict] = None
    sha256: str = ""
    frames: int = 0

    def to_json(self) -> str:
        # ASCII-only JSON: a non-UTF-8 file name survives as \udcXX escapes.
        d = {k: getattr(self, k) for k in ("path", "video_id", "stage", "reason", "kind", "stderr")}
        return json.dumps(d, ensure_ascii=True)

    @classmethod
    def of(cls, ref: VideoRef, err: VideoError) -> "DeadLetter":
        return cls(ref.path, ref.video_id, err.stage, err.reason, err.kind, err.stderr)


class WriteDeadLetter(beam.PTransform):
    """Writes OUTPUT/dead_letter.jsonl (one JSON object per video, possibly none).

    Returns:
      {"files": PCollection[file name], "counts": PCollection[{kind: n}] (a single dict)}.
    """

    def __init__(self, output_dir: str):
        super().__init__()
        self.path = f"{output_dir.rstrip('/')}/{DEAD_LETTER_FILE}"

    def expand(self, dead):
        files = (dead | "ToJson" >> beam.Map(DeadLetter.to_json)
                 | "Write" >> beam.io.WriteToText(self.path, shard_name_template="", num_shards=1))
        counts = (dead | "Kind" >> beam.Map(lambda d: d.kind) | "Count" >> beam.combiners.Count.PerElement()
                  | "ToDict" >> beam.combiners.ToDict())
        return {"files": files, "counts": counts}
