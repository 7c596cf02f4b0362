"""`clipforge demo`: a synthetic corpus with known truth -> ingest -> train -> evaluate, in one command."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

from schemas.errors import exits
from schemas.tasks import NAMES, TASKS

CLIP_SECONDS = 5.0  # 60 frames per clip at 12 fps: ~19 windows each at stride 3


# Each task reads the same kind of corpus (64x64 clips at 12 fps); only the target and the model
# differ (schemas/tasks.py `demo`). 15% of the videos are held out for the test split so the
# report rests on ~9 unseen clips.
_WINDOWS = ("--fps", "12", "--size", "64x64", "--color", "gray", "--splits", "0.7,0.15,0.15")
PRESETS = {name: row.demo for name, row in TASKS.items()}
# The metric each task is judged on, and the baseline it must beat: (label, model key, baseline key).
HEADLINES = {name: list(row.headline) for name, row in TASKS.items()}


def ingest_flags(task: str) -> list[str]:
    """The ingest flags of a task's demo dataset (besides --input, --labels and --output)."""
    return ["--task", task, *PRESETS[task].ingest, *_WINDOWS]


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d


def summary_table(task: str, metrics: dict) -> str:
    """The table the demo prints: each headline metric for the model beside its baseline."""
    base = TASKS[task].baseline.name
    rows = [f"{'metric':<10} {'model':>10} {base:>26}"]
    for label, mk, bk in HEADLINES[task]:
        rows.append(f"{label:<10} {_get(metrics, mk):>10.4f} {_get(metrics, bk):>26.4f}")
    if "gain_db_over_copy_last" in metrics:
        rows.append(f"gain over copy-last: {metrics['gain_db_over_copy_last']:+.2f} dB")
    if "skill" in metrics:
        rows.append(f"skill (1 - MSE/MSE_baseline): {metrics['skill']:.4f}")
    return "\n".join(rows)


def _step(name: str, fn, argv: list[str]) -> None:
    print(f"\n=== {name}: clipforge {name} {' '.join(argv)}", flush=True)
    start = time.time()
    rc = fn(argv)
    if rc:
        raise SystemExit(f"clipforge demo: the {name} step failed (exit {rc}); see its output above")
    print(f"=== {name} done in {time.time() - start:.1f}s", flush=True)


def run_demo(workdir: str, task: str, arch: str | None = None, n_videos: int = 60,
             epochs: int | None = None, seed: int = 0, extra_train: tuple[str, ...] = ()) -> dict:
    """Runs the whole chain under WORKDIR and returns the metrics dict written by evaluate."""
    from clipforge import synth
    from pipelines import ingest
    from trainer import evaluate, main as train_main

    preset = PRESETS[task]
    # A corpus with extra shapes per clip is its own (the other tasks' clips stay as they were).
    corpus = os.path.join(workdir, "corpus" + (f"_shapes{preset.extra_shapes}" if preset.extra_shapes else ""))
    data = os.path.join(workdir, f"dataset_{task}")
    run_dir = os.path.join(workdir, f"train_{task}")
    report = os.path.join(workdir, f"report_{task}")
    start = time.time()
    # The corpus is shared by the three tasks; remade only when its settings change.
    stamp = os.path.join(corpus, "corpus.json")
    wanted = {"videos": n_videos, "seed": seed, "seconds": CLIP_SECONDS, "extra_shapes": preset.extra_shapes}
    if not os.path.exists(stamp) or json.load(open(stamp, encoding="utf-8")) != wanted:
        print(f"=== making a synthetic corpus of {n_videos} clips in {corpus}", flush=True)
        shutil.rmtree(corpus, ignore_errors=True)
        synth.make_corpus(corpus, n_videos=n_videos, seed=seed, seconds=CLIP_SECONDS,
                          extra_shapes=preset.extra_shapes)
        with open(stamp, "w", encoding="utf-8") as f:
            json.dump(wanted, f)
    # frame targets are the clips' own frames; the other tasks join the corpus' labels.csv
    labels = ["--labels", os.path.join(corpus, "labels.csv")] if TASKS[task].labels else []
    _step("ingest", ingest.run, ["--input", corpus, *labels, "--output", data, "--overwrite",
                                 *ingest_flags(task)])
    _step("train", train_main.run, ["--data", data, "--workdir", run_dir, "--arch", arch or preset.arch,
                                    "--epochs", str(epochs or preset.epochs), "--set", f"seed={seed}",
                                    *preset.train, *extra_train])
    _step("evaluate", evaluate.run, ["--model", os.path.join(run_dir, "export"), "--data", data,
                                     "--split", "test", "--output", report])
    with open(os.path.join(report, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    print(f"\n=== clipforge demo ({task}, {arch or preset.arch}) finished in {time.time() - start:.0f}s")
    print(f"test split: {metrics['windows']} windows from {metrics['videos']} videos")
    print(summary_table(task, metrics))
    print(f"report:  {os.path.join(report, 'report.html')}")
    print(f"metrics: {os.path.join(report, 'metrics.json')}")
    return metrics


@exits("clipforge demo")
def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="clipforge demo",
        description="Make a synthetic corpus of real mp4 clips of moving shapes (known speed and direction), "
                    "then ingest, train and evaluate, and print the model's metrics beside the baseline's.")
    parser.add_argument("--workdir", default="demo_out", help="where the corpus, dataset, model and report go")
    parser.add_argument("--task", choices=NAMES, default=NAMES[0],
                        help="; ".join(f"{name}: {row.demo.what}" for name, row in TASKS.items()))
    parser.add_argument("--arch", help="architecture (clipforge train --list-archs); default: the task's preset")
    parser.add_argument("--videos", type=int, default=60, help="clips in the synthetic corpus")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the task's preset)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the corpus and training")
    args = parser.parse_args(argv)
    if args.videos < 10:
        parser.error("--videos must be at least 10 so each split holds a video")
    run_demo(args.workdir, args.task, args.arch, args.videos, args.epochs, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
