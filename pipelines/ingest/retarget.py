"""Relabelled videos whose bytes did not change: their windows get the new label rows' targets, no decode.

A window's target is read at its last real frame's time (pipelines/ingest/engine.py), which its record
holds (`start_frame`, `padded_frames`); its frames, and so the pixel stats, do not depend on the
labels. A video can be retargeted when every one of its windows was labelled before (none was
skipped, so no window is missing from the shards) and every one is labelled under the new rows
(none would be skipped now, which would change which frames a fresh ingest counts). Any other
relabelled video is decoded again.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from pipelines.ingest.labels import VideoLabels
from pipelines.ingest.stats import VideoStatsAccumulator
from schemas import example_proto as ex
from schemas import features as fk
from schemas.spec import TargetSpec, WindowSpec
from schemas.tasks import stats_widths, task_of


def candidates(relabelled: set[str], old_rows: dict[str, dict], labels: Optional[dict[str, VideoLabels]],
               target: TargetSpec) -> set[str]:
    """The relabelled ids that may be retargeted: ingested, no window skipped, a usable new label row."""
    if labels is None or task_of(target).target_frames:  # frame targets come from the video itself
        return set()
    out = set()
    for vid in relabelled:
        row, rows = old_rows.get(vid) or {}, labels.get(vid)
        if row.get("status") == "ok" and not row.get("unlabelled_windows") and rows is not None \
                and rows.problem(target.outputs) is None:
            out.add(vid)
    return out


@dataclasses.dataclass
class Retargeter:
    """New targets for the windows of the videos in `ids`, checked while the old shards are scanned.

    Attributes:
      spec, target: the dataset's specs.
      labels: {video_id: VideoLabels} of the new labels file.
      ids: candidate video ids; `scan` drops those with a window the new rows do not cover.
      targets: {video_id: [(start_frame, target)]} found by `scan`.
    """

    spec: WindowSpec
    target: TargetSpec
    labels: dict[str, VideoLabels]
    ids: set[str]
    targets: dict[str, list] = dataclasses.field(default_factory=dict)

    def _target_of(self, parsed: dict, vid: str):
        padded = int((parsed.get(fk.PADDED_FRAMES) or [0])[0])
        last = int(parsed[fk.START_FRAME][0]) + self.spec.frames - 1 - padded  # its last real frame
        return self.labels[vid].at(last / self.spec.fps)

    def scan(self, vid: str, record: bytes) -> None:
        """Reads one old record of a candidate; a window without a new target rules its video out."""
        parsed = ex.parse_example(record)
        t = self._target_of(parsed, vid)
        if t is None:
            self.ids.discard(vid)
            return
        self.targets.setdefault(vid, []).append((int(parsed[fk.START_FRAME][0]), t))

    def rewrite(self, vid: str, record: bytes) -> bytes:
        """The record with its target replaced by the new one (the same bytes a fresh ingest writes)."""
        parsed = ex.parse_example(record)
        t = self._target_of(parsed, vid)
        feature = task_of(self.target).encode(self.target, t, vid, int(parsed[fk.START_FRAME][0]), None)
        return ex.replace_features(record, feature)

    def sums(self, vid: str) -> dict:
        """The manifest's target sums of a retargeted video, over its windows in frame order."""
        acc = VideoStatsAccumulator(self.spec.channels, *stats_widths(self.target))
        for _, t in sorted(self.targets.get(vid, []), key=lambda s: s[0]):
            acc.add_target(t)
        s = acc.summary(vid, "")
        return {"target_sum": list(s.target_sum), "target_sumsq": list(s.target_sumsq), "class_hist": list(s.class_hist)}
