"""`clipforge demo`: a synthetic corpus with known truth -> ingest -> train -> evaluate, in one command."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from typing import Any, Iterator, Mapping, Optional

from clipforge import stages
from pipelines.ingest.config import IngestConfig
from schemas.configs import from_mapping
from schemas.errors import ClipforgeError, exits
from schemas.logs import get_logger
from schemas.tasks import NAMES, TASKS
from trainer.config import load_config
from trainer.main import CONFIG_FLAGS

CLIP_SECONDS = 5.0  # 60 frames per clip at 12 fps: ~19 windows each at stride 3
log = get_logger(__name__)


# Each task reads the same kind of corpus (64x64 clips at 12 fps); only the target and the model
# differ (schemas/tasks.py `demo`: the architecture, epochs, corpus and each stage's fields). 15% of
# the videos are held out for the test split so the report rests on ~9 unseen clips.
WINDOWS = {"fps": 12, "size": "64x64", "color": "gray", "splits": (0.7, 0.15, 0.15)}
PRESETS = {name: row.demo for name, row in TASKS.items()}
# The metric each task is judged on, and the baseline it must beat: (label, model key, baseline key).
HEADLINES = {name: list(row.headline) for name, row in TASKS.items()}


def ingest_fields(task: str, corpus: str, output: str) -> dict[str, Any]:
    """The IngestConfig fields of a task's demo dataset of CORPUS, written to OUTPUT (replacing it)."""
    # frame targets are the clips' own frames; the other tasks join the corpus' labels.csv
    labels = os.path.join(corpus, "labels.csv") if TASKS[task].labels else None
    return {"input": corpus, "labels": labels, "output": output, "overwrite": True, "task": task,
            **PRESETS[task].ingest, **WINDOWS}


def ingest_config(task: str, corpus: str, output: str) -> IngestConfig:
    """The checked IngestConfig of a task's demo dataset (see ingest_fields)."""
    config = from_mapping(IngestConfig, ingest_fields(task, corpus, output), f"demo {task} ingest")
    config.check()
    return config


def train_fields(task: str, data: str, workdir: str, arch: Optional[str] = None, epochs: Optional[int] = None,
                 seed: int = 0, extra: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The TrainConfig fields of a task's demo model (EXTRA: more fields, e.g. {"jit": True})."""
    preset = PRESETS[task]
    return {"data": data, "workdir": workdir, "arch": arch or preset.arch, "epochs": epochs or preset.epochs,
            "seed": seed, **preset.train, **(extra or {})}


def _flags(fields: Mapping[str, Any], flags: Optional[tuple[str, ...]] = None) -> str:
    """FIELDS as the stage's command-line flags, for the step headers: the command a reader can run
    by hand. With FLAGS, a field not among them is shown as `--set key=value`."""
    out = []
    for key, value in fields.items():
        shown = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        if value is None or value is False:
            continue
        if flags is not None and key not in flags:
            out.append(f"--set {key}={shown}")
        else:
            out.append("--" + key.replace("_", "-") + ("" if value is True else f" {shown}"))
    return " ".join(out)


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


@contextlib.contextmanager
def _step(name: str, flags: str) -> Iterator[None]:
    """Logs the step's header (its command line) and time; a failed step ends the demo (exit 1)."""
    log.info(f"\n=== {name}: clipforge {name} {flags}")
    start = time.time()
    try:
        yield
    except ClipforgeError as e:  # already shown, as the stage's subcommand shows it
        raise SystemExit(f"clipforge demo: the {name} step failed (exit {e.exit_code}); see its output above") from None
    log.info(f"=== {name} done in {time.time() - start:.1f}s")


def run_demo(workdir: str, task: str, arch: Optional[str] = None, n_videos: int = 60, epochs: Optional[int] = None,
             seed: int = 0, extra_train: Optional[Mapping[str, Any]] = None) -> dict:
    """Runs the whole chain under WORKDIR and returns the metrics dict written by evaluate.

    Args:
      extra_train: more TrainConfig fields for the training step.
    """
    from clipforge import synth

    preset = PRESETS[task]
    # A corpus with extra shapes per clip is its own (the other tasks' clips stay as they were).
    corpus = os.path.join(workdir, "corpus" + (f"_shapes{preset.extra_shapes}" if preset.extra_shapes else ""))
    data = os.path.join(workdir, f"dataset_{task}")
    run_dir = os.path.join(workdir, f"train_{task}")
    report = os.path.join(workdir, f"report_{task}")
    ingest_cfg = ingest_config(task, corpus, data)
    train_in = train_fields(task, data, run_dir, arch, epochs, seed, extra_train)
    train_cfg = load_config(train_in)
    start = time.time()
    # The corpus is shared by the three tasks; remade only when its settings change.
    stamp = os.path.join(corpus, "corpus.json")
    wanted = {"videos": n_videos, "seed": seed, "seconds": CLIP_SECONDS, "extra_shapes": preset.extra_shapes}
    if not os.path.exists(stamp) or json.load(open(stamp, encoding="utf-8")) != wanted:
        log.info(f"=== making a synthetic corpus of {n_videos} clips in {corpus}")
        shutil.rmtree(corpus, ignore_errors=True)
        synth.make_corpus(corpus, n_videos=n_videos, seed=seed, seconds=CLIP_SECONDS,
                          extra_shapes=preset.extra_shapes)
        with open(stamp, "w", encoding="utf-8") as f:
            json.dump(wanted, f)
    with _step("ingest", _flags(ingest_fields(task, corpus, data))):
        stages.ingest(ingest_cfg)
    with _step("train", _flags(train_in, CONFIG_FLAGS)):
        stages.train(train_cfg)
    evaluate_in = {"model": os.path.join(run_dir, "export"), "data": data, "split": "test", "output": report}
    with _step("evaluate", _flags(evaluate_in)):
        metrics = stages.evaluate(**evaluate_in)
        if metrics["nonfinite_windows"]:  # shown by stages.evaluate, as `clipforge evaluate` exits 1 for it
            raise ClipforgeError("the model returned NaN or infinite predictions")
    log.info(f"\n=== clipforge demo ({task}, {train_cfg.arch}) finished in {time.time() - start:.0f}s")
    log.info(f"test split: {metrics['windows']} windows from {metrics['videos']} videos")
    log.info(summary_table(task, metrics))
    log.info(f"report:  {os.path.join(report, 'report.html')}")
    log.info(f"metrics: {os.path.join(report, 'metrics.json')}")
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
