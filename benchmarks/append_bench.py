"""Benchmark 7: `ingest --append` of 2 new clips to a dataset of 200, against ingesting the 2 alone and all 202."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from benchmarks.ingest_bench import SHORT_FLAGS

# One worker and the bundled decoder, as the short-clips benchmark (1b) runs its 1w row.
RUNNER = ["--direct_num_workers", "1", "--decoder", "bundled"]


def _clip(path: str, seconds: float, offset: float) -> None:
    """A 320x136 H.264 mandelbrot clip; OFFSET seconds into the zoom, so each clip has its own frames."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "mandelbrot=size=320x136:rate=25",
                    "-ss", str(offset), "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast",
                    "-pix_fmt", "yuv420p", path], check=True)


def _ingest(inputs: str, out: str, extra: list[str] = ()) -> float:
    start = time.time()
    subprocess.run([sys.executable, "-m", "clipforge.cli", "ingest", "--input", inputs, "--output", out,
                    *SHORT_FLAGS, *RUNNER, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.time() - start


def run(workdir: str, clips: int = 200, new: int = 2, seconds: float = 2, repeats: int = 3) -> dict:
    """Wall times (best of REPEATS, whole CLI processes) of: appending NEW clips to a dataset of CLIPS,
    ingesting the NEW clips alone, and a fresh ingest of all CLIPS + NEW.

    The corpus is CLIPS copies of one short clip (as benchmark 1b) plus NEW clips of other frames.
    """
    base_dir = os.path.join(workdir, f"append_corpus{clips}")
    os.makedirs(base_dir, exist_ok=True)
    first = os.path.join(base_dir, "clip000.mp4")
    if not os.path.exists(first):
        _clip(first, seconds, 0)
    for i in range(1, clips):
        p = os.path.join(base_dir, f"clip{i:03d}.mp4")
        if not os.path.exists(p):
            shutil.copy2(first, p)
    only_new = os.path.join(workdir, "append_new")
    os.makedirs(only_new, exist_ok=True)
    for i in range(new):
        p = os.path.join(only_new, f"new{i}.mp4")
        if not os.path.exists(p):
            _clip(p, seconds, 4 + 2 * i)
    grown = os.path.join(workdir, f"append_corpus{clips + new}")
    shutil.rmtree(grown, ignore_errors=True)
    shutil.copytree(base_dir, grown)  # copy2: the same mtimes, so the copies count as the same files
    base = os.path.join(workdir, "append_base")
    shutil.rmtree(base, ignore_errors=True)
    _ingest(grown, base)  # the dataset of CLIPS the appends start from (not timed)
    for name in os.listdir(only_new):
        shutil.copy2(os.path.join(only_new, name), os.path.join(grown, name))
    appended = os.path.join(workdir, "append_out")
    times = {"append": [], "new_alone": [], "fresh_all": []}
    for _ in range(repeats):
        shutil.rmtree(appended, ignore_errors=True)
        shutil.copytree(base, appended)
        times["append"].append(_ingest(grown, appended, ["--append"]))
        out = os.path.join(workdir, "append_alone")
        shutil.rmtree(out, ignore_errors=True)
        times["new_alone"].append(_ingest(only_new, out))
        out = os.path.join(workdir, "append_fresh")
        shutil.rmtree(out, ignore_errors=True)
        times["fresh_all"].append(_ingest(grown, out))
    best = {k: min(v) for k, v in times.items()}
    return {"clips": clips, "new": new, "repeats": repeats, **{f"{k}_s": round(v, 2) for k, v in best.items()},
            **{f"{k}_all_s": [round(t, 2) for t in v] for k, v in times.items()},
            "append_vs_new_alone": round(best["append"] / best["new_alone"], 3),
            "fresh_all_vs_append": round(best["fresh_all"] / best["append"], 3)}
