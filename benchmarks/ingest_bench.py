"""Ingest benchmarks: throughput against bare ffmpeg, worker scaling, peak RSS vs length, storage."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np

from pipelines import decoder
from schemas.tasks import NEXT_FRAME

CLIP = dict(width=640, height=272, fps=25)


def ingest_flags(stride: int = 8) -> list[str]:
    """The window settings every ingest benchmark uses (T=8 at 112x112 gray, all videos in train)."""
    return ["--task", NEXT_FRAME.name, "--frames", "8", "--stride", str(stride), "--fps", "25",
            "--size", "112x112", "--color", "gray", "--horizon", "1", "--splits", "1,0,0"]
FILTER = "fps=25,scale=112:112,format=gray"
SHORT_FILTER = "fps=10,scale=64:64:flags=area,format=gray"  # the short-clips settings


def make_clip(path: str, seconds: float) -> None:
    """A 640x272 H.264 clip with real texture and motion (a mandelbrot zoom).

    The lavfi mandelbrot source is slow to render, so 10 s are rendered once and longer clips
    repeat them with a stream copy (no re-encode).
    """
    w, h, fps = CLIP["width"], CLIP["height"], CLIP["fps"]
    base = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "mandelbrot_10s.mp4")
    if not os.path.exists(base):
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"mandelbrot=size={w}x{h}:rate={fps}", "-t", "10", "-c:v", "libx264",
                        "-preset", "veryfast", "-g", "50", "-pix_fmt", "yuv420p", base], check=True)
    loops = max(0, int(round(seconds / 10)) - 1)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", str(loops), "-i", base,
                    "-t", str(seconds), "-c", "copy", path], check=True)


def ffmpeg_limit(paths: list[str], vf: str = FILTER, ffmpeg: str = "ffmpeg") -> tuple[float, int]:
    """Seconds and output frames for bare `ffmpeg -threads 1` decode+filter to /dev/null, one
    process per clip, one after another (FFMPEG: the system's by default)."""
    frames, start = 0, time.time()
    for p in paths:
        out = subprocess.run([ffmpeg, "-nostdin", "-threads", "1", "-i", p, "-vf", vf, "-f", "rawvideo",
                              "-y", "/dev/null"], capture_output=True, text=True, check=True).stderr
        frames += int(out.rsplit("frame=", 1)[1].split()[0])
    return time.time() - start, frames


def ffmpeg_limit_parallel(paths: list[str], processes: int = 2, vf: str = FILTER,
                          ffmpeg: str = "ffmpeg") -> tuple[float, int]:
    """The same bare decode with PROCESSES ffmpegs at once, each over its share of the clips:
    the physical limit for that many workers."""
    start = time.time()
    with ThreadPoolExecutor(processes) as pool:
        results = list(pool.map(lambda share: ffmpeg_limit(share, vf, ffmpeg),
                                [paths[i::processes] for i in range(processes)]))
    return time.time() - start, sum(frames for _, frames in results)


def run_ingest(inputs: str, out: str, extra: list[str], stride: int = 8,
               cores: Optional[set[int]] = None, sample_every: float = 0.02) -> tuple[float, float]:
    """Runs `clipforge ingest` in a subprocess; returns (wall seconds, peak RSS MiB of its process tree).

    RSS is sampled every `sample_every` seconds over the process and all its children (Beam
    workers, ffmpeg); sampling every 20 ms costs ~5% of a core, so throughput runs sample rarely.
    `cores` confines the process and its children (ffmpeg too) to those CPUs.
    """
    import psutil
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "clipforge.cli", "ingest", "--input", inputs, "--output", out,
           *ingest_flags(stride), *extra]
    start = time.time()
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=pin)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):  # a child exited between listing and reading
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        time.sleep(sample_every)
    wall = time.time() - start
    if proc.returncode:
        raise RuntimeError(f"ingest failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, peak / 2 ** 20


def startup_seconds(workdir: str, extra: list[str], cores: Optional[set[int]] = None,
                    sample_every: float = 0.02) -> float:
    """Wall time of the same ingest on a 1-second clip: imports, pipeline set-up, metadata."""
    d = os.path.join(workdir, "corpus_startup")
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, "clip.mp4")
    if not os.path.exists(p):
        make_clip(p, 1)
    return min(run_ingest(d, os.path.join(workdir, "out_startup"), extra, cores=cores, sample_every=sample_every)[0]
               for _ in range(2))


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def throughput(workdir: str, seconds: float = 300, clips: int = 4) -> dict:
    """Benchmark 1: frames/s of ingest against the bare ffmpeg limit.

    Runs: one worker, two workers (multi_processing), one worker held to one core (so the
    worker's Python and its ffmpeg share it, as the scaling goal's "one worker" assumes), and
    one worker with overlapping windows (stride 2 = T/4). Reported twice: end to end, and with
    the start-up (an ingest of a 1 s clip) taken out.
    """
    corpus = os.path.join(workdir, f"corpus_tp{int(seconds)}")
    os.makedirs(corpus, exist_ok=True)
    paths = [os.path.join(corpus, f"clip{i}.mp4") for i in range(clips)]
    for p in paths:
        if not os.path.exists(p):
            make_clip(p, seconds)
    ff_s, frames = ffmpeg_limit(paths)
    res = {"clips": clips, "seconds_per_clip": seconds, "frames": frames, "ffmpeg_threads1_s": round(ff_s, 2),
           "ffmpeg_threads1_fps": round(frames / ff_s, 1)}
    par_s, par_frames = ffmpeg_limit_parallel(paths, 2)
    res["ffmpeg_threads1_2proc_fps"] = round(par_frames / par_s, 1)
    runs = {"1w": (1, None, 8), "2w": (2, None, 8), "1w_stride2": (1, None, 2)}  # stride T/4: overlapping windows
    if len(os.sched_getaffinity(0)) >= 2:
        runs["1w_1core"] = (1, {min(os.sched_getaffinity(0))}, 8)  # the worker and its ffmpeg share one core
    for name, (workers, cores, stride) in runs.items():
        extra = ["--direct_num_workers", str(workers), "--ffmpeg-threads", "1"]
        if workers > 1:
            extra += ["--direct_running_mode", "multi_processing"]
        wall, _ = run_ingest(corpus, os.path.join(workdir, f"out_tp{name}"), extra, stride=stride, cores=cores,
                             sample_every=0.05)
        startup = startup_seconds(workdir, extra, cores=cores, sample_every=0.05)
        res[f"ingest_{name}_wall_s"] = round(wall, 2)
        res[f"ingest_{name}_startup_s"] = round(startup, 2)
        res[f"ingest_{name}_fps"] = round(frames / wall, 1)
        res[f"ingest_{name}_fps_after_startup"] = round(frames / max(wall - startup, 1e-6), 1)
    res["ratio_1w_vs_ffmpeg"] = round(res["ingest_1w_fps_after_startup"] / res["ffmpeg_threads1_fps"], 3)
    res["scaling_2w_vs_1w"] = round(res["ingest_2w_fps_after_startup"] / res["ingest_1w_fps_after_startup"], 3)
    res["scaling_2w_vs_1w_end_to_end"] = round(res["ingest_2w_fps"] / res["ingest_1w_fps"], 3)
    res["ratio_2w_vs_2_ffmpegs"] = round(res["ingest_2w_fps_after_startup"] / res["ffmpeg_threads1_2proc_fps"], 3)
    if "ingest_1w_1core_fps" in res:
        # per core: two workers on two cores against one worker held to one core
        res["scaling_2w_2cores_vs_1w_1core"] = round(
            res["ingest_2w_fps_after_startup"] / res["ingest_1w_1core_fps_after_startup"], 3)
        res["scaling_2w_2cores_vs_1w_1core_end_to_end"] = round(res["ingest_2w_fps"] / res["ingest_1w_1core_fps"], 3)
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


SHORT_FLAGS = ["--task", NEXT_FRAME.name, "--frames", "4", "--stride", "4", "--fps", "10", "--size", "64x64",
               "--color", "gray", "--splits", "1,0,0", "--ffmpeg-threads", "1"]


def short_clips(workdir: str, clips: int = 200, seconds: float = 2) -> dict:
    """Benchmark 5: a corpus of many short clips, where process start-up used to be the floor.

    `clips` copies of one 2 s 320x136 H.264 clip. In one run: the bare loop of the system ffmpeg
    (one `ffmpeg -threads 1` per clip, the same filter, to /dev/null), the bundled ffmpeg's bare loop
    alone and as two loops at once (how far two cores scale the decoder itself), then ingest with one and
    two workers (bundled decoder; two as threads, the default, and as SDK processes) and with one
    worker on the system decoder; clips/s end to end and with the start-up (an ingest of one clip)
    taken out.
    """
    corpus = os.path.join(workdir, f"corpus_short{clips}")
    os.makedirs(corpus, exist_ok=True)
    first = os.path.join(corpus, "clip000.mp4")
    if not os.path.exists(first):
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                        "mandelbrot=size=320x136:rate=25", "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast",
                        "-pix_fmt", "yuv420p", first], check=True)
    paths = [first]
    for i in range(1, clips):
        p = os.path.join(corpus, f"clip{i:03d}.mp4")
        if not os.path.exists(p):
            shutil.copyfile(first, p)
        paths.append(p)
    one = os.path.join(workdir, "corpus_short1")
    os.makedirs(one, exist_ok=True)
    if not os.path.exists(os.path.join(one, "clip.mp4")):
        shutil.copyfile(first, os.path.join(one, "clip.mp4"))
    bare = ffmpeg_limit(paths, SHORT_FILTER)[0]
    res = {"clips": clips, "bare_system_ffmpeg_s": round(bare, 2), "bare_system_ffmpeg_clips_per_s": round(clips / bare, 2)}
    # What two cores give the decoder itself: the bundled ffmpeg's bare loop, once over all clips
    # and as two loops at once over half each. Two workers cannot scale past what these scale.
    bundled = decoder.resolve("bundled").ffmpeg
    one_loop = ffmpeg_limit(paths, SHORT_FILTER, bundled)[0]
    two_loops = ffmpeg_limit_parallel(paths, 2, SHORT_FILTER, bundled)[0]
    res.update({"bare_bundled_1_loop_s": round(one_loop, 2), "bare_bundled_2_loops_s": round(two_loops, 2),
                "scaling_bare_bundled_2_loops_vs_1": round(one_loop / two_loops, 3)})
    # "2w" is what a user gets from --direct_num_workers 2 (threads, pipelines/runners/options.py);
    # "2w_multi_processing" is the SDK-process mode it replaced as the default, for comparison
    runs = {"1w": ["--direct_num_workers", "1", "--decoder", "bundled"],
            "2w": ["--direct_num_workers", "2", "--decoder", "bundled"],
            "2w_multi_processing": ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing",
                                    "--decoder", "bundled"],
            "1w_system": ["--direct_num_workers", "1", "--decoder", "system"]}
    for name, extra in runs.items():
        wall = _run_short(corpus, os.path.join(workdir, f"out_short_{name}"), extra)
        startup = min(_run_short(one, os.path.join(workdir, "out_short_startup"), extra) for _ in range(2))
        res[f"ingest_{name}_wall_s"] = round(wall, 2)
        res[f"ingest_{name}_startup_s"] = round(startup, 2)
        res[f"ingest_{name}_clips_per_s"] = round(clips / wall, 2)
        res[f"ingest_{name}_clips_per_s_after_startup"] = round(clips / max(wall - startup, 1e-6), 2)
    for suffix in ("", "_after_startup"):
        base = clips / bare
        res[f"ratio_1w_vs_bare{suffix}"] = round(res[f"ingest_1w_clips_per_s{suffix}"] / base, 3)
        res[f"ratio_1w_system_vs_bare{suffix}"] = round(res[f"ingest_1w_system_clips_per_s{suffix}"] / base, 3)
        for two in ("2w", "2w_multi_processing"):
            res[f"scaling_{two}_vs_1w{suffix}"] = round(res[f"ingest_{two}_clips_per_s{suffix}"]
                                                        / res[f"ingest_1w_clips_per_s{suffix}"], 3)
    return res


def _run_short(inputs: str, out: str, extra: list[str]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.time()
    subprocess.run([sys.executable, "-m", "clipforge.cli", "ingest", "--input", inputs, "--output", out, *SHORT_FLAGS,
                    *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.time() - start
