"""Ingest benchmarks: throughput against bare ffmpeg, worker scaling, peak RSS vs length, storage."""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

CLIP = dict(width=640, height=272, fps=25)


def ingest_flags(stride: int = 8) -> list[str]:
    """The window settings every ingest benchmark uses (T=8 at 112x112 gray, all videos in train)."""
    return ["--task", "next_frame", "--frames", "8", "--stride", str(stride), "--fps", "25",
            "--size", "112x112", "--color", "gray", "--horizon", "1", "--splits", "1,0,0"]
FILTER = "fps=25,scale=112:112,format=gray"


def make_clip(path: str, seconds: float) -> None:
    """A 640x272 H.264 clip with real texture and motion (mandelbrot zoom + testsrc overlay)."""
    w, h, fps = CLIP["width"], CLIP["height"], CLIP["fps"]
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"mandelbrot=size={w}x{h}:rate={fps}", "-t", str(seconds),
                    "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", path], check=True)


def ffmpeg_limit(paths: list[str]) -> tuple[float, int]:
    """Seconds and output frames for bare `ffmpeg -threads 1` decode+filter to /dev/null."""
    frames, start = 0, time.time()
    for p in paths:
        out = subprocess.run(["ffmpeg", "-nostdin", "-threads", "1", "-i", p, "-vf", FILTER, "-f", "rawvideo",
                              "-y", "/dev/null"], capture_output=True, text=True, check=True).stderr
        frames += int(out.rsplit("frame=", 1)[1].split()[0])
    return time.time() - start, frames


def run_ingest(inputs: str, out: str, extra: list[str]) -> tuple[float, float]:
    """Runs `clipforge ingest` in a subprocess; returns (wall seconds, peak RSS MiB of it and children)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "clipforge.cli", "ingest", "--input", inputs, "--output", out, *ingest_flags(), *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.time()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.time() - start
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(rss, before) / 1024


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def throughput(workdir: str, seconds: float = 40, clips: int = 4) -> dict:
    """Benchmark 1: frames/s of ingest (1 and 2 workers) against the bare ffmpeg limit."""
    corpus = os.path.join(workdir, "corpus_tp")
    os.makedirs(corpus, exist_ok=True)
    paths = [os.path.join(corpus, f"clip{i}.mp4") for i in range(clips)]
    for p in paths:
        if not os.path.exists(p):
            make_clip(p, seconds)
    ff_s, frames = ffmpeg_limit(paths)
    res = {"clips": clips, "seconds_per_clip": seconds, "frames": frames,
           "ffmpeg_threads1_fps": frames / ff_s}
    for workers in (1, 2):
        wall, _ = run_ingest(corpus, os.path.join(workdir, f"out_tp{workers}"),
                             ["--direct_num_workers", str(workers), "--direct_running_mode", "multi_processing"])
        res[f"ingest_{workers}w_fps"] = frames / wall
        res[f"ingest_{workers}w_wall_s"] = wall
    res["ratio_1w_vs_ffmpeg"] = res["ingest_1w_fps"] / res["ffmpeg_threads1_fps"]
    res["scaling_2w_vs_1w"] = res["ingest_2w_fps"] / res["ingest_1w_fps"]
    return res


def rss_vs_length(workdir: str, base_seconds: float = 4) -> dict:
    """Benchmark 3: peak RSS of ingest on 1x, 8x, 32x the same clip length (one worker)."""
    res = {}
    for mult in (1, 8, 32):
        d = os.path.join(workdir, f"corpus_rss{mult}")
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, "clip.mp4")
        if not os.path.exists(p):
            make_clip(p, base_seconds * mult)
        _, rss = run_ingest(d, os.path.join(workdir, f"out_rss{mult}"), ["--direct_num_workers", "1"])
        res[f"peak_rss_mib_{mult}x"] = rss
    res["ratio_32x_vs_1x"] = res["peak_rss_mib_32x"] / res["peak_rss_mib_1x"]
    return res


def storage(workdir: str, seconds: float = 8) -> dict:
    """Benchmark 4: dataset bytes / raw decoded bytes per encoding, gzip on/off, stride T and T/4."""
    d = os.path.join(workdir, "corpus_st")
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, "clip.mp4")
    if not os.path.exists(p):
        make_clip(p, seconds)
    res = {}
    for stride in (8, 2):
        for enc in ("png", "jpeg", "raw"):
            for comp in ("none", "gzip"):
                out = os.path.join(workdir, f"out_st_{enc}_{comp}_{stride}")
                shutil.rmtree(out, ignore_errors=True)
                subprocess.run([sys.executable, "-m", "clipforge.cli", "ingest", "--input", d, "--output", out,
                                *ingest_flags(stride), "--encoding", enc, "--compression", comp], check=True, capture_output=True)
                with open(os.path.join(out, "metadata.json")) as f:
                    meta = json.load(f)
                windows = sum(s["windows"] for s in meta["splits"].values())
                # raw bytes of what the records hold: T input frames + horizon next frames per window
                raw = windows * (8 + 1) * 112 * 112
                res[f"stride{stride}_{enc}_{comp}"] = round(dir_bytes(out) / raw, 4)
    return res


def jpeg_psnr(workdir: str) -> float:
    """PSNR of the jpeg dataset's frames against the png (lossless) dataset's, same windows."""
    from schemas.codec import RecordCodec
    from schemas.metadata import DatasetMetadata
    from schemas.tfrecord import iter_records
    out = {}
    for enc in ("png", "jpeg"):
        root = os.path.join(workdir, f"out_st_{enc}_none_8")
        meta = DatasetMetadata.load(root)
        codec = RecordCodec(meta.spec, meta.target)
        recs = {}
        for path in meta.shard_paths(root, "train"):
            for r in iter_records(path):
                d = codec.decode_numpy(r)
                recs[(d["video_id"], d["start_frame"])] = d["frames"].astype(np.float64)
        out[enc] = recs
    mse = np.mean([np.mean((out["png"][k] - out["jpeg"][k]) ** 2) for k in out["png"]])
    return float(10 * np.log10(255 ** 2 / max(mse, 1e-12)))
