"""The settings of one `clipforge predict` run: PredictConfig, and the flags that fill it."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Optional

from pipelines.decoder import DECODERS
from schemas.errors import SetupError

SHORT_VIDEOS = ("drop", "pad")


@dataclasses.dataclass
class PredictConfig:
    """Every setting of one predict run; the same names as the flags (with _ for -).

    Attributes:
      model: the export directory written by `clipforge train` (WORKDIR/export).
      input: a directory of videos, a glob, or a text file listing paths.
      output: the directory to create for the predictions.
      batch_size: the largest batch of windows per model call.
      overwrite: replace an existing output (atomically).
      video_timeout: seconds allowed to decode one video.
      segment_seconds: decode local videos longer than ~1.5x this as segments (0: never split).
      decoder: bundled | system; None: the one the model's dataset was ingested with.
      short_videos: drop | pad, for a video shorter than one window.
      frame_folders: a folder of images under input is one video, at source_fps.
      source_fps: with frame_folders, the rate the frames were taken at.
      report_videos: timelines drawn in OUTPUT/report.html (0: none).
      embeddings: also write each window's backbone feature vector and each video's mean.
    """

    model: str
    input: str
    output: str
    batch_size: int = 16
    overwrite: bool = False
    video_timeout: float = 600.0
    segment_seconds: float = 300.0
    decoder: Optional[str] = None
    short_videos: str = "drop"
    frame_folders: bool = False
    source_fps: Optional[float] = None
    report_videos: int = 50
    embeddings: bool = False

    def check(self) -> "PredictConfig":
        """Checks the settings that need no file; returns self.

        Raises:
          SetupError: naming the flag and the value received.
        """
        if self.batch_size < 1:
            raise SetupError(f"--batch-size={self.batch_size}: expected an integer >= 1")
        if self.report_videos < 0:
            raise SetupError(f"--report-videos={self.report_videos}: expected an integer >= 0")
        if not self.segment_seconds >= 0:
            raise SetupError(f"--segment-seconds={self.segment_seconds}: expected 0 (never split) or a positive "
                             "number of seconds")
        if self.frame_folders and not (self.source_fps is not None and self.source_fps > 0):
            raise SetupError(f"--source-fps={self.source_fps}: expected a positive frame rate with --frame-folders "
                             "(the rate the frames were taken at)")
        # argparse's choices check these on the command line; a library caller gets the same words
        if self.short_videos not in SHORT_VIDEOS:
            raise SetupError(f"--short-videos={self.short_videos}: expected one of {', '.join(SHORT_VIDEOS)}")
        if self.decoder is not None and self.decoder not in DECODERS:
            raise SetupError(f"--decoder={self.decoder}: expected one of {', '.join(DECODERS)}")
        return self


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clipforge predict",
        description="Run an exported model over new videos. Videos are decoded and windowed exactly as at "
                    "ingest, with the spec stored beside the model (its metadata.json), and run through Beam's "
                    "RunInference. Writes OUTPUT/windows/*.parquet (one row per window), OUTPUT/videos.parquet "
                    "(one row per video), OUTPUT/dead_letter.jsonl (videos that could not be decoded), "
                    "OUTPUT/drift.json (the videos' signals against the model's training split), "
                    "OUTPUT/report.html (what was read and a timeline per video) and, for "
                    "next_frame models, OUTPUT/frames/<video>/<start_frame>.png. Other flags go to Beam "
                    "(--runner, --direct_num_workers, cloud runner flags).")
    p.add_argument("--model", required=True, help="export directory written by `clipforge train` (WORKDIR/export)")
    p.add_argument("--input", required=True, help="a directory of videos, a glob, or a text file listing paths")
    p.add_argument("--output", required=True, help="directory to create for the predictions")
    p.add_argument("--batch-size", type=int, default=16, help="largest batch of windows per model call (default 16)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output (atomically)")
    p.add_argument("--video-timeout", type=float, default=600.0, help="seconds allowed to decode one video")
    p.add_argument("--segment-seconds", type=float, default=300.0,
                   help="decode local videos longer than ~1.5x this as segments of about this length, in parallel "
                        "on several workers, with exactly the windows of a whole decode (default 300; 0 never splits)")
    p.add_argument("--decoder", choices=DECODERS,
                   help="bundled (the imageio-ffmpeg wheel's static ffmpeg) or system (ffmpeg/ffprobe from PATH); "
                        "default: the one the model's dataset was ingested with")
    p.add_argument("--short-videos", choices=SHORT_VIDEOS, default="drop",
                   help="a video shorter than one window: drop it (dead letter too_short) or pad it, repeating its "
                        "last frame until one window fits; the window's row says how many in padded_frames "
                        "(default drop)")
    p.add_argument("--frame-folders", action="store_true",
                   help="a folder under --input that directly holds images (jpg, jpeg, png, bmp, webp) and no video "
                        "file is one video (id: its path), its frames in natural order at --source-fps, as at ingest")
    p.add_argument("--source-fps", type=float,
                   help="--frame-folders: the rate the frames were taken at; resampled to the model's fps")
    p.add_argument("--report-videos", type=int, default=50, metavar="N",
                   help="timelines drawn in OUTPUT/report.html: the first N videos by name (default 50; 0: none)")
    p.add_argument("--embeddings", action="store_true",
                   help="also write each window's backbone feature vector (the export's embed signature) as an "
                        "`embedding` column, and each video's mean as `mean_embedding` in videos.parquet")
    return p


def parse_config(argv: list[str]) -> tuple[PredictConfig, list[str]]:
    """Parses predict's flags into a checked PredictConfig.

    Returns:
      (config, the flags left over for Beam's PipelineOptions).

    Raises:
      SetupError: a flag value out of range (argparse itself exits 2 on unknown choices).
    """
    args, beam_args = build_parser().parse_known_args(argv)
    config = PredictConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PredictConfig)})
    return config.check(), beam_args
