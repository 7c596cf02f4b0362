"""The `clipforge` command: one subcommand per stage, each handing its flags to the stage's run()."""
from __future__ import annotations

import importlib
import os
import sys

# subcommand -> (module with run(argv) -> int, one-line help). Imported lazily: `clipforge ingest`
# never pays for TensorFlow, `clipforge train` never for Beam.
COMMANDS = {
    "ingest": ("pipelines.ingest", "videos -> sharded TFRecords of frame windows + metadata.json (Beam)"),
    "train": ("trainer.main", "train an architecture on an ingested dataset and export a SavedModel"),
    "evaluate": ("trainer.evaluate", "metrics.json + report.html for an export on a dataset split"),
    "predict": ("pipelines.predict", "run an exported model over new videos into Parquet (Beam)"),
    "validate": ("pipelines.validate", "check every shard of a dataset against its metadata.json"),
    "demo": ("clipforge.demo", "synthetic corpus -> ingest -> train -> evaluate, in one command"),
    "retrain": ("clipforge.retrain", "scheduled ingest + train + evaluate + promotion gate"),
}

# The stages that load a SavedModel get clipforge's CPU kernel settings here (trainer/cpu.py);
# train (also inside demo and retrain) chooses them itself once it knows the architecture.
USES_TENSORFLOW = ("evaluate", "predict")


def _usage() -> str:
    lines = ["usage: clipforge <command> [flags]   (clipforge <command> --help for its flags)", "", "commands:"]
    for name, (module, text) in COMMANDS.items():
        lines.append(f"  {name:<10} {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from clipforge import __version__
        print(__version__)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"clipforge: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if name in USES_TENSORFLOW:
        from trainer import cpu
        cpu.choose()  # before anything imports TensorFlow, which reads these settings once
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.run(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
