"""`clipforge train` / `python -m trainer`: flags in, one training run out."""
from __future__ import annotations

import argparse
import os

from schemas.errors import exits
from schemas.logs import get_logger
from schemas.metadata import DatasetMetadata
from trainer import cpu
from trainer.archs import ARCHS, arch_defaults
from trainer.config import STRATEGIES, TrainConfig

# The flags that map one-to-one onto TrainConfig fields (dashes become underscores).
CONFIG_FLAGS = ("data", "workdir", "arch", "epochs", "batch_size", "learning_rate", "strategy",
                "mixed_precision", "jit", "deterministic", "seed")
log = get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every flag is also a TrainConfig key for --config and --set."""
    archs = "\n".join(f"  {name:<19} {entry.summary}" for name, entry in ARCHS.items())
    keys = ", ".join(f.name for f in TrainConfig.__dataclass_fields__.values())
    p = argparse.ArgumentParser(
        prog="clipforge train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train an architecture on a dataset written by `clipforge ingest` and export "
                    "a SavedModel to WORKDIR/export.",
        epilog=f"architectures:\n{archs}\n\nconfig keys (--config YAML and --set): {keys}\n"
               "precedence: defaults < --config < flags < --set.\n"
               "A killed run restarted with the same command resumes from WORKDIR/backup.")
    p.add_argument("--data", help="dataset directory (must hold metadata.json)")
    p.add_argument("--workdir", help="output directory: backup/, checkpoints/, tensorboard/, "
                                     "training_log.csv, export/")
    p.add_argument("--arch", help="architecture name (see --list-archs)")
    p.add_argument("--epochs", type=int, help="epochs (default 10)")
    p.add_argument("--batch-size", type=int, help="global batch size over all replicas (default 32)")
    p.add_argument("--learning-rate", type=float, help="peak learning rate of the cosine schedule "
                                                       "(default 1e-3)")
    p.add_argument("--strategy", choices=STRATEGIES,
                   help="auto: MirroredStrategy when >1 GPU, else default; mirrored: all local "
                        "GPUs (or logical CPUs); multiworker: MultiWorkerMirroredStrategy from "
                        "TF_CONFIG (default auto)")
    p.add_argument("--mixed-precision", action="store_true", default=None,
                   help="mixed_float16 on GPU, mixed_bfloat16 on CPU; outputs stay float32")
    p.add_argument("--jit", action="store_true", default=None, help="compile steps with XLA")
    p.add_argument("--deterministic", action="store_true", default=None,
                   help="enable TensorFlow op determinism (reproducible, slower)")
    p.add_argument("--seed", type=int, help="seed of weights, shuffles and augmentation (default 0)")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML mapping of config keys")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set epochs=5 --set arch_options.rnn=gru "
                        "--set arch_options.filters=8,16 (repeatable)")
    p.add_argument("--list-archs", action="store_true", help="print the architecture names with their arch_options and defaults, and exit")
    return p


@exits("clipforge train")
def run(argv: list[str]) -> int:
    """Runs `clipforge train` with `argv`; returns the exit code (0 ok, 1 failed run, 2 bad setup)."""
    args = build_parser().parse_args(argv)
    if args.list_archs:  # each name, then its knobs (arch_options) with their defaults
        for name in ARCHS:
            knobs = " ".join(f"{k}={v!r}" for k, v in arch_defaults(name).items())
            log.info(f"{name:<20} {knobs}")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from trainer.config import load_config
    cfg = load_config({k: getattr(args, k) for k in CONFIG_FLAGS}, args.config, args.overrides)
    DatasetMetadata.load(cfg.data)  # a wrong --data fails here, before TensorFlow starts
    cpu.choose(cfg.arch)  # before trainer.train imports TensorFlow
    from trainer.train import train
    result = train(cfg)
    log.info(result.summary())
    return 0
