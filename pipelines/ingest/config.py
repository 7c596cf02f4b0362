"""The typed ingest config: one dataclass, loadable from flags or YAML, checked before any work."""
from __future__ import annotations

import argparse
import dataclasses
import re
from typing import Optional

from pipelines.decode import RESIZE_MODES
from pipelines.decoder import DECODER_ENV, DECODERS, default_decoder
from pipelines.probe import DEFAULT_FORMATS, DEFAULT_MAX_DURATION, DEFAULT_MAX_PIXELS
from schemas.configs import ConfigError, from_mapping, load_yaml
from schemas.metadata import COMPRESSIONS
from schemas.spec import ENCODINGS, TASKS, SpecError, TargetSpec, WindowSpec
from schemas.tasks import choices_help, task_of

SPLIT_NAMES = ("train", "validation", "test")
COLORS = {"gray": 1, "rgb": 3}
SHORT_VIDEOS = ("drop", "pad")
RESERVED_COLUMNS = ("video", "video_id", "time", "start", "end")
# Settings that do not change a dataset's content: left out of its fingerprint.
NON_DATA_FIELDS = ("output", "overwrite", "ffmpeg_threads", "segment_seconds", "append", "keep_missing")


@dataclasses.dataclass
class IngestConfig:
    """Every setting of one ingest run; the same names as the flags (with _ for -) and YAML keys.

    Attributes:
      input: a directory of videos, a glob, or a text file listing one path per line.
      output: the dataset directory to create.
      task: a row of the task table (schemas/tasks.py).
      labels: CSV or Parquet file joined on `video` (file name) or `video_id`.
      target_columns: regression outputs, in record order.
      label_column: the class (or `;`-separated class set) column; None: the task row's default
        (label, or labels for multilabel).
      frames, stride, fps, size ("HxW"), color (gray|rgb): the window spec.
      horizon: next_frame: frames after each window stored as its target.
      resize: stretch | crop | pad.
      splits: train, validation, test fractions (1 to 3 values summing to 1).
      encoding: png | jpeg | raw; None picks png for gray and jpeg for rgb.
      jpeg_quality: 1..100.
      num_shards: shards per split; 0 picks a count giving shards of 100-200 MiB (estimated).
      compression: none | gzip.
      overwrite: replace an existing output directory (atomically).
      video_timeout: wall-clock seconds allowed for probing and decoding one video.
      ffmpeg_threads: decoder threads per ffmpeg process; 0 lets ffmpeg choose.
      formats: container formats (ffmpeg demuxer names) a video may have; others are dead-lettered.
      max_pixels: largest width x height a video may declare.
      max_duration: longest duration in seconds a video may declare (or decode to).
      segment_seconds: videos longer than about 1.5x this are decoded as segments of about this
        many seconds, in parallel; 0 decodes every video whole. The windows are the same either way.
      decoder: bundled (the static ffmpeg of the imageio-ffmpeg wheel, one process per video) or
        system (ffmpeg and ffprobe from PATH); $CLIPFORGE_DECODER, else bundled, by default.
      labels_from_folders: classification: a video's class is the folder that directly holds it.
      split_lists: "train=FILE[,validation=FILE][,test=FILE]": each FILE lists video ids (first token
        of each line); a video in no list is dead-lettered (not_in_split_lists).
      group_pattern: a regex on the video id whose first capture group is the video's group.
      dedupe: keep the first id (by path) of each set of byte-identical files, dead-letter the others.
      frame_folders: a folder under the input directory that directly holds images and no video
        file is one video, its frames in natural order at source_fps.
      source_fps: frame folders: the rate their frames were taken at (a labels `fps` column overrides it).
      short_videos: drop (a video shorter than one window is dead-lettered, too_short) | pad (its last
        frame is repeated until one window fits; the record's padded_frames counts the repeats).
      append: add to the finished dataset at `output` (pipelines/ingest/append.py): only videos its manifest
        does not know, or whose bytes or label rows changed, are decoded.
      keep_missing: with append, keep the windows of videos no longer in the input.
    """

    input: str = ""
    output: str = ""
    task: str = ""
    labels: Optional[str] = None
    target_columns: tuple[str, ...] = ("target",)
    label_column: Optional[str] = None
    frames: int = 16
    stride: int = 16
    fps: float = 10.0
    size: str = "112x112"
    color: str = "rgb"
    horizon: int = 1
    resize: str = "stretch"
    splits: tuple[float, ...] = (0.8, 0.1, 0.1)
    encoding: Optional[str] = None
    jpeg_quality: int = 95
    num_shards: int = 0
    compression: str = "none"
    overwrite: bool = False
    video_timeout: float = 600.0
    ffmpeg_threads: int = 0
    formats: tuple[str, ...] = DEFAULT_FORMATS
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_duration: float = DEFAULT_MAX_DURATION
    segment_seconds: float = 300.0
    decoder: str = dataclasses.field(default_factory=default_decoder)
    labels_from_folders: bool = False
    split_lists: Optional[str] = None
    group_pattern: Optional[str] = None
    dedupe: bool = False
    frame_folders: bool = False
    source_fps: Optional[float] = None
    short_videos: str = "drop"
    append: bool = False
    keep_missing: bool = False

    @property
    def split_list_files(self) -> dict[str, str]:
        """{split: FILE} of --split-lists; raises ConfigError naming a malformed entry."""
        out: dict[str, str] = {}
        for item in filter(None, (self.split_lists or "").split(",")):
            name, eq, path = item.partition("=")
            name = name.strip()
            if not eq or name not in SPLIT_NAMES or not path.strip() or name in out:
                raise ConfigError(f"split_lists={self.split_lists!r} is invalid at {item!r}: expected "
                                  "train=FILE[,validation=FILE][,test=FILE], each split once")
            out[name] = path.strip()
        if self.split_lists is not None and "train" not in out:
            raise ConfigError(f"split_lists={self.split_lists!r} is invalid: it needs train=FILE")
        return out

    def to_dict(self, data_only: bool = False) -> dict:
        """The config as JSON-ready values; data_only leaves out NON_DATA_FIELDS."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        return {k: v for k, v in d.items() if not (data_only and k in NON_DATA_FIELDS)}

    @property
    def height_width(self) -> tuple[int, int]:
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(self.size))
        if not m:
            raise ConfigError(f"size={self.size!r}: expected HEIGHTxWIDTH, e.g. 112x112")
        return int(m.group(1)), int(m.group(2))

    @property
    def split_names(self) -> tuple[str, ...]:
        return SPLIT_NAMES[:len(self.splits)]

    @property
    def resolved_encoding(self) -> str:
        return self.encoding or ("png" if self.color == "gray" else "jpeg")

    def window_spec(self) -> WindowSpec:
        h, w = self.height_width
        return WindowSpec(frames=self.frames, stride=self.stride, fps=self.fps, height=h, width=w,
                          channels=COLORS[self.color], encoding=self.resolved_encoding,
                          jpeg_quality=self.jpeg_quality)

    def target_spec(self, classes: tuple[str, ...] = ()) -> TargetSpec:
        given = {"outputs": self.target_columns, "classes": classes, "horizon": self.horizon}
        return TargetSpec(self.task, **{f: given[f] for f in task_of(self.task).fields})

    def check(self) -> None:
        """Raises ConfigError naming the first field whose value cannot work."""
        def need(cond, field, expected):
            if not cond:
                raise ConfigError(f"{field}={getattr(self, field)!r} is invalid: expected {expected}")
        need(bool(self.input), "input", "a directory, glob or list file of videos (--input)")
        need(bool(self.output), "output", "a dataset directory to write (--output)")
        need(self.task in TASKS, "task", " | ".join(TASKS))
        row = task_of(self.task)
        if self.label_column is None:
            self.label_column = row.label_column
        need(self.color in COLORS, "color", "gray | rgb")
        need(self.resize in RESIZE_MODES, "resize", " | ".join(RESIZE_MODES))
        need(self.short_videos in SHORT_VIDEOS, "short_videos", " | ".join(SHORT_VIDEOS))
        need(self.encoding is None or self.encoding in ENCODINGS, "encoding", " | ".join(ENCODINGS))
        need(self.compression in COMPRESSIONS, "compression", " | ".join(COMPRESSIONS))
        need(self.num_shards >= 0, "num_shards", "0 (automatic) or a positive count")
        need(self.video_timeout > 0, "video_timeout", "a positive number of seconds")
        need(self.ffmpeg_threads >= 0, "ffmpeg_threads", "0 (automatic) or a positive count")
        need(len(self.formats) >= 1 and all(re.fullmatch(r"\w+", f) for f in self.formats), "formats",
             "comma-separated ffmpeg demuxer names, e.g. mov,mp4,matroska,webm")
        need(self.max_pixels > 0, "max_pixels", "a positive number of pixels (width x height)")
        need(self.max_duration > 0, "max_duration", "a positive number of seconds")
        need(self.decoder in DECODERS, "decoder", " | ".join(DECODERS))
        need(self.segment_seconds >= 0, "segment_seconds", "0 (never split) or a positive number of seconds")
        need(self.horizon >= 1, "horizon", "an integer >= 1")
        need(1 <= len(self.splits) <= 3 and all(f >= 0 for f in self.splits)
             and abs(sum(self.splits) - 1) < 1e-6 and self.splits[0] > 0, "splits",
             "1 to 3 fractions (train, validation, test) >= 0 that sum to 1, train > 0")
        need(not (self.append and self.overwrite), "overwrite", "not with --append (which keeps the dataset)")
        need(self.append or not self.keep_missing, "keep_missing", "only with --append")
        if not row.labels:
            need(self.labels is None, "labels", f"no labels file: {self.task} targets are the video's own frames")
        if self.labels_from_folders:
            need(row.label_kind == "class", "labels_from_folders",
                 f"only with --task {' | '.join(n for n in TASKS if task_of(n).label_kind == 'class')}")
            need(self.labels is None, "labels", "no labels file with --labels-from-folders (classes are folders)")
        elif row.labels:
            need(bool(self.labels), "labels", f"a CSV or Parquet labels file: --task {self.task} needs one "
                                              "(or --labels-from-folders for classification)")
        self.split_list_files  # noqa: B018 - raises ConfigError when malformed
        if self.frame_folders:
            need(self.source_fps is not None and self.source_fps > 0, "source_fps",
                 "a positive frame rate with --frame-folders (the rate the frames were taken at)")
        if self.group_pattern is not None:
            try:
                re.compile(self.group_pattern)
            except re.error as e:
                raise ConfigError(f"group_pattern={self.group_pattern!r} is invalid: not a regular expression "
                                  f"({e})") from None
        need(len(self.target_columns) >= 1 and len(set(self.target_columns)) == len(self.target_columns),
             "target_columns", "one or more distinct column names")
        clash = sorted(set(self.target_columns) & set(RESERVED_COLUMNS))
        need(not clash or row.labels != "--target-columns", "target_columns", f"names other than {RESERVED_COLUMNS}")
        need(self.label_column not in RESERVED_COLUMNS or row.labels != "--label-column", "label_column",
             f"a name other than {RESERVED_COLUMNS}")
        try:
            self.window_spec()
        except SpecError as e:
            raise ConfigError(str(e)) from None


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear message and exit 2 from run(), not SystemExit here
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="clipforge ingest", allow_abbrev=False,
        description="Decode videos into windows of frames and write them as sharded TFRecords under "
                    "OUTPUT/<split>/, with OUTPUT/dead_letter.jsonl for unusable videos and "
                    "OUTPUT/metadata.json written last. Flags not listed here go to Apache Beam "
                    "(e.g. --runner, --direct_num_workers, --direct_running_mode); DirectRunner by default.")
    a = p.add_argument
    a("--config", help="YAML file with any of the settings below (keys spelled with _); flags override it")
    a("--input", help="a directory (its video files, recursively), a glob, or a text file with one path "
                      "per line; local paths or any Beam filesystem (gs://, s3://)")
    a("--output", help="dataset directory to create; written beside it and renamed into place at the end")
    a("--task", choices=TASKS, help=f"what each window is labelled with: {choices_help()}")
    a("--labels", help="CSV or Parquet joined on column `video` (file name) or `video_id`: one row per "
                       "video, or segments (start, end seconds), or a time series (time seconds)")
    a("--target-columns", help="regression: comma-separated target columns (default: target)")
    a("--label-column", help="classification: the label column (default: label); multilabel: the column of "
                             "`;`-separated class names, empty for none (default: labels)")
    a("--frames", type=int, help="frames per window, T (default 16)")
    a("--stride", type=int, help="frames between window starts (default 16)")
    a("--fps", type=float, help="frame rate every video is resampled to (default 10)")
    a("--size", help="frame size HEIGHTxWIDTH after resizing (default 112x112)")
    a("--color", choices=sorted(COLORS), help="gray (1 channel) or rgb (3) (default rgb)")
    a("--horizon", type=int, help="next_frame: frames after each window kept as its target (default 1)")
    a("--resize", choices=RESIZE_MODES, help="stretch to the size, crop to fill it, or pad to fit it "
                                             "(default stretch)")
    a("--splits", help="train,validation,test fractions by a stable hash of the video id (default 0.8,0.1,0.1)")
    a("--encoding", choices=ENCODINGS, help="frame storage (default png for gray, jpeg for rgb)")
    a("--jpeg-quality", type=int, help="jpeg quality 1..100 (default 95)")
    a("--num-shards", type=int, help="shards per split; 0 = estimated from the corpus for 100-200 MiB shards (default)")
    a("--compression", choices=COMPRESSIONS, help="shard compression (default none)")
    a("--overwrite", action="store_true", default=None,
      help="replace an existing output directory (atomically); without it an existing one is refused")
    a("--video-timeout", type=float, help="seconds allowed to probe and decode one video (default 600)")
    a("--ffmpeg-threads", type=int, help="decoder threads per ffmpeg process; 0 = ffmpeg decides (default)")
    a("--formats", help="comma-separated container formats (ffmpeg demuxer names, as ffprobe's format_name "
                        "lists them) a video may have; any other, and every playlist or reference format "
                        f"(hls, concat, image2...), is dead-lettered unread (default {','.join(DEFAULT_FORMATS)})")
    a("--max-pixels", type=int, help="largest frame width x height accepted; bigger videos are dead-lettered "
                                     f"before decoding (default {DEFAULT_MAX_PIXELS}, 8K)")
    a("--max-duration", type=float, help="longest video in seconds, as declared by its header and as decoded; "
                                         f"longer ones are dead-lettered (default {DEFAULT_MAX_DURATION:g})")
    a("--segment-seconds", type=float, help="split videos longer than ~1.5x this into segments of about this "
                                            "many seconds, decoded in parallel on different workers (seek + "
                                            "overlap, the same windows as a whole decode); 0 never splits "
                                            "(default 300)")
    a("--decoder", choices=DECODERS,
      help="bundled: the static ffmpeg pinned by the imageio-ffmpeg wheel, which starts ~7x faster, "
           "one process per video (its stream header is the probe); system: ffmpeg and ffprobe from PATH, "
           f"probe then decode (default ${DECODER_ENV}, else bundled)")
    a("--labels-from-folders", action="store_true", default=None,
      help="classification without a labels file: a video's class is the name of the folder that directly "
           "holds it (root/<class>/<video>); classes sorted by name")
    a("--split-lists", help="train=FILE[,validation=FILE][,test=FILE]: official splits, each FILE listing video "
                            "ids (paths under the input root, first token per line, e.g. UCF101's "
                            "trainlist01.txt); a video in no list is dead-lettered (not_in_split_lists)")
    a("--group-pattern", help="regex on the video id whose first capture group names the video's group "
                              "(UCF101: _g(\\d+)_); hash splits hash the group, so a group never spans splits")
    a("--frame-folders", action="store_true", default=None,
      help="a folder under --input that directly holds images (jpg, jpeg, png, bmp, webp) and no video file is one "
           "video: its id is the folder's path, its frames in natural order (2.jpg before 10.jpg) at --source-fps")
    a("--source-fps", type=float, help="--frame-folders: the rate the frames were taken at (a labels `fps` column "
                                       "overrides it per folder); resampled to --fps like any video")
    a("--short-videos", choices=SHORT_VIDEOS,
      help="a video shorter than one window (frames + horizon for next_frame): drop it (dead letter too_short) "
           "or pad it, repeating its last frame until one window fits; the record's padded_frames counts the "
           "repeats (default drop)")
    a("--dedupe", action="store_true", default=None,
      help="keep the first id (by path) of each set of byte-identical files; dead-letter the others "
           "(duplicate_content)")
    a("--append", action="store_true", default=None,
      help="add to the finished dataset at --output, made with the same settings (--labels may change): only "
           "videos not in its videos.parquet, or whose bytes or label rows changed, are decoded, into new shards; "
           "videos gone from --input are removed")
    a("--keep-missing", action="store_true", default=None,
      help="--append: keep the windows of videos that are no longer in --input")
    return p


def parse_config(argv: list[str]) -> tuple[IngestConfig, list[str]]:
    """Parses ingest flags (and --config YAML) into a checked IngestConfig.

    Returns:
      (config, the flags left over for Beam's PipelineOptions).

    Raises:
      ConfigError: a flag or YAML value is missing, unknown or invalid; the message names it.
    """
    args, rest = build_parser().parse_known_args(argv)
    values = load_yaml(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if v is not None and k != "config"})
    config = from_mapping(IngestConfig, values, where=args.config or "flags")
    config.check()
    return config, rest
