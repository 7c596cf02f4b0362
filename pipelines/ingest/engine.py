"""Videos (or segments of long ones) in, records out: labels, split, streaming decode, encode once."""
from __future__ import annotations

import dataclasses
import itertools
from typing import Iterator, Optional, Union

from pipelines.dead_letters import DeadLetter
from pipelines.decoder import default_decoder, resolve
from pipelines.frames import folder_source_fps
from pipelines.ingest.labels import VideoLabels
from pipelines.ingest.leakage import FileHasher, SignatureWatcher, signature_step
from pipelines.ingest.split import split_of
from pipelines.ingest.stats import VideoStatsAccumulator, VideoSummary, merge_summaries
from pipelines.inputs import VideoRef, local_file
from pipelines.probe import ProbeLimits, VideoError
from pipelines.segments import EdgeDigests, Segment, boundary_problem, shared_frames_end
from pipelines.signals import FrameSignals
from pipelines.streams import plan_decode, segment_stream, too_short
from pipelines.windows import iter_windows, padded_frames
from schemas.codec import RecordCodec
from schemas.spec import TargetSpec, WindowSpec
from schemas.tasks import stats_widths, task_of


@dataclasses.dataclass(frozen=True)
class VideoJob:
    """Everything a worker needs to turn a video into records (picklable, no Beam).

    Attributes:
      spec, target: the dataset's window and target specs.
      resize: stretch | crop | pad.
      split_names, split_fractions: the splits and their shares.
      labels: {video_id: VideoLabels}, or None for next_frame.
      timeout: wall-clock seconds for probing and decoding one video.
      threads: ffmpeg decoder threads (0 = ffmpeg decides).
      limits: allowed container formats, largest frame, longest duration (checked by the probe).
      segment_seconds: local videos longer than ~1.5x this are decoded in segments of about
        this length (`plan_video`); 0 decodes every video whole.
      decoder: bundled | system (pipelines/decoder.py); $CLIPFORGE_DECODER or bundled by default.
      assigned: {video_id: split} fixed by split lists or a labels `split` column; None: none.
      groups: {video_id: group}: videos of a group share one hashed split; None: none.
      source_fps: frame folders: the rate their frames were taken at (--source-fps).
      folder_fps: {video_id: fps} from a labels `fps` column, overriding source_fps per folder.
      short_videos: drop | pad: a video shorter than one window is dead-lettered (too_short) or
        padded to one window by repeating its last frame (whole decodes only: such a video is never split).
    """

    spec: WindowSpec
    target: TargetSpec
    resize: str = "stretch"
    split_names: tuple[str, ...] = ("train",)
    split_fractions: tuple[float, ...] = (1.0,)
    labels: Optional[dict[str, VideoLabels]] = None
    timeout: float = 600.0
    threads: int = 0
    limits: ProbeLimits = ProbeLimits()
    segment_seconds: float = 0.0
    decoder: str = dataclasses.field(default_factory=default_decoder)
    assigned: Optional[dict[str, str]] = None
    groups: Optional[dict[str, str]] = None
    source_fps: float = 0.0
    folder_fps: Optional[dict[str, float]] = None
    short_videos: str = "drop"

    def split_of(self, video_id: str) -> str:
        """The video's split (pipelines/ingest/split.py `split_of`)."""
        return split_of(video_id, self.split_fractions, self.split_names, self.assigned, self.groups)

    def fps_of(self, video_id: str) -> float:
        """A frame folder's source frame rate (its labels `fps` cell, else --source-fps)."""
        return folder_source_fps(video_id, self.source_fps, self.folder_fps)

    @property
    def horizon(self) -> int:
        return task_of(self.target).horizon(self.target)


def _label_check(ref: VideoRef, job: VideoJob) -> Optional[DeadLetter]:
    """The dead letter for a video whose label row is missing or unusable, else None."""
    if job.labels is None:
        return None
    labels = job.labels.get(ref.video_id)
    if labels is None:
        return DeadLetter(ref.path, ref.video_id, "labels", f"no row for {ref.video_id!r} in the labels file",
                          "no_label")
    problem = labels.problem(job.target.outputs)
    return DeadLetter(ref.path, ref.video_id, "labels", problem, "bad_target") if problem else None


def plan_video(ref: VideoRef, job: VideoJob) -> Iterator[Union[Segment, DeadLetter]]:
    """Checks a video's label row, then splits it into segments when it is long (`plan_decode`).

    Yields:
      The video's segments in order, or one DeadLetter (labels, probe or read stage).
    """
    dead = _label_check(ref, job)
    if dead:
        yield dead
        return
    yield from plan_decode(ref, job.spec, job.horizon, job.timeout, job.limits, job.segment_seconds,
                           resolve(job.decoder))


@dataclasses.dataclass(frozen=True)
class SegmentResult:
    """What one segment wrote, for `finish_video` to rejoin with its siblings.

    Attributes:
      ref, index, count: the video and the segment's place among its segments.
      start: the segment's first frame.
      summary: its windows, owned frames (the shared ones are counted by the segment before)
        and stats.
      error: why it wrote nothing, when its decode failed.
      head, tail: (frames, hash) of the frames shared with the segment before / after.
    """

    ref: VideoRef
    index: int
    count: int
    start: int
    summary: VideoSummary
    error: Optional[DeadLetter] = None
    head: tuple[int, str] = (0, "")
    tail: tuple[int, str] = (0, "")


def process_segment(seg: Segment, job: VideoJob, scratch_dir: str
                    ) -> Iterator[Union[tuple[str, bytes], SegmentResult]]:
    """Decodes one segment into serialized records, streaming (the label row is checked already).

    The split is a hash of the id (before any window); remote files are copied locally; the
    file is probed unless the planner did; then ffmpeg's frame stream runs through the ring
    buffer. Each frame is encoded at most once, however many windows hold it, and counted
    once in the pixel stats (frames shared with the previous segment are counted there).

    Yields:
      (split, serialized record) per window as soon as it fills; then one SegmentResult.
    """
    ref, spec, horizon = seg.ref, job.spec, job.horizon
    labels = job.labels.get(ref.video_id) if job.labels is not None else None
    split = job.split_of(ref.video_id)
    codec = RecordCodec(spec, job.target)
    stats = VideoStatsAccumulator(spec.channels, *stats_widths(job.target))

    def target_at(start: int, window=None):
        # read at the window's last input frame; a padded window's is its last real frame
        last = window[spec.frames - 1].index + seg.start if window is not None else start + spec.frames - 1
        return labels.at(last / spec.fps) if labels is not None else None

    counted_from = shared_frames_end(seg, spec, horizon, lambda s: labels is None or target_at(s) is not None)
    edges = EdgeDigests(seg, spec.frames + horizon)
    signature = SignatureWatcher(signature_step(spec.fps), seg.start, seg.end)
    meter = FrameSignals(None if seg.end is None else seg.end - seg.start)
    written = unlabelled = padded = 0
    pad = job.short_videos == "pad" and seg.count == 1  # a short video is never split
    partial, error, stream, hasher = "", None, None, None
    try:
        with local_file(ref.path, scratch_dir) as path:
            # the first segment hashes the file while ffmpeg reads it (pipelines/ingest/leakage.py)
            hasher = FileHasher(path) if seg.index == 0 and not ref.frames_root else None
            stream = segment_stream(seg, path, spec, job.resize, job.timeout, job.threads, job.limits, horizon,
                                     resolve(job.decoder), job.fps_of(ref.video_id))
            try:
                frames = meter.watch(signature.watch(edges.watch(itertools.islice(stream, seg.skip, None))))
                for local_start, window in iter_windows(frames, spec.frames, spec.stride, horizon, pad):
                    start = seg.start + local_start
                    target = target_at(start, window)
                    if labels is not None and target is None:
                        unlabelled += 1
                        continue
                    for f in dict.fromkeys(window):  # a padded window repeats a Frame: count it once
                        if not f.is_encoded and seg.start + f.index >= counted_from:
                            stats.add_frame(f.pixels)
                    encoded = [f.encoded(codec.encode_frame) for f in window]
                    record = codec.serialize(
                        ref.video_id, start, start / spec.fps, encoded[:spec.frames],
                        target=target, label=target,  # the codec reads the one its task row names
                        encoded_next=encoded[spec.frames:] if horizon else None,
                        padded_frames=padded_frames(local_start, window))
                    if target is not None:
                        stats.add_target(target)
                    padded += int(padded_frames(local_start, window) > 0)
                    written += 1
                    yield split, record
            except VideoError as e:
                if not written:
                    raise
                partial = e.reason  # frames already written stay: ffmpeg failed after them
            if not partial and stream.stderr.strip():
                # At -loglevel error a clean decode prints nothing; a truncated file still exits 0.
                partial = "ffmpeg reported: " + stream.stderr.strip().splitlines()[-1]
            digest = hasher.result(job.timeout) if hasher else ""  # before a remote file's local copy is deleted
    except VideoError as e:
        error = DeadLetter.of(ref, e)
    except OSError as e:
        error = DeadLetter(ref.path, ref.video_id, "read", f"cannot read the file: {e}", "read_failed")
    if error is not None:
        digest = hasher.result(job.timeout) if hasher else ""
    if ref.frames_root and stream is not None and getattr(stream, "folder", None) is not None:
        digest = stream.folder.sha256  # set once every frame was fed
    facts = seg.facts or (stream.info.facts() if stream is not None and stream.info else {})
    owned = edges.count if seg.end is None else min(edges.count, seg.end - seg.start)
    summary = stats.summary(ref.video_id, split, windows=written, frames_decoded=owned,
                            unlabelled_windows=unlabelled, padded_windows=padded, partial=partial, path=ref.path, facts=facts,
                            sha256=digest, signature=tuple(signature.samples), signals=meter.sums)
    yield SegmentResult(ref, seg.index, seg.count, seg.start, summary, error, edges.head, edges.tail)


def finish_video(results: list[SegmentResult], job: VideoJob) -> Union[VideoSummary, DeadLetter]:
    """Rejoins a video's segments: one VideoSummary when any wrote records, else one DeadLetter.

    A segment that failed while others wrote records, or that does not continue the segment
    before it (their shared frames differ), marks the video partial, as a decode error after
    the first records does in a whole decode.
    """
    results = sorted(results, key=lambda r: r.index)
    ref = results[0].ref
    summary = merge_summaries([r.summary for r in results])
    if not summary.windows:
        errors = [r.error for r in results if r.error]
        if errors:
            dead = errors[0]
        elif summary.unlabelled_windows:
            dead = DeadLetter(ref.path, ref.video_id, "labels", f"none of its {summary.unlabelled_windows} "
                              "windows has a label at its last frame's time", "no_labelled_window")
        else:
            dead = DeadLetter.of(ref, too_short(summary.frames_decoded, job.spec, job.horizon))
        return dataclasses.replace(dead, facts=summary.facts or None, sha256=summary.sha256,
                                   frames=summary.frames_decoded)
    problems = [r.summary.partial or (r.error.reason if r.error else "") for r in results]
    if len(results) != results[0].count:
        problems.append(f"{results[0].count - len(results)} of its {results[0].count} segments went missing")
    problems += [boundary_problem(b.index, b.start, a.tail, b.head) for a, b in zip(results, results[1:])
                 if not (a.error or b.error or a.summary.partial or b.summary.partial)]
    return dataclasses.replace(summary, partial=next((p for p in problems if p), ""))


