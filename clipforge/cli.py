"""The `clipforge` command: one subcommand per stage, each handing its flags to the stage's run()."""
from __future__ import annotations

import importlib
import json
import os
import sys

# subcommand -> (module with run(argv) -> int, one-line help). Imported lazily: `clipforge ingest`
# never pays for TensorFlow, `clipforge train` never for Beam.
COMMANDS = {
    "ingest": ("pipelines.ingest", "videos -> sharded TFRecords of frame windows + metadata.json (Beam)"),
    "train": ("trainer.main", "train an architecture on an ingested dataset and export a SavedModel"),
    "evaluate": ("trainer.evaluation", "metrics.json + report.html for an export on a dataset split"),
    "predict": ("pipelines.predict", "run an exported model over new videos into Parquet (Beam)"),
    "validate": ("clipforge.validate", "check every shard of a dataset against its metadata.json"),
    "demo": ("clipforge.demo", "synthetic corpus -> ingest -> train -> evaluate, in one command"),
    "retrain": ("clipforge.retrain", "scheduled ingest + train + evaluate + promotion gate"),
}

# The stages that load a SavedModel get clipforge's CPU kernel settings here (trainer/cpu.py), for
# the architecture its model card names; train (also inside demo and retrain) chooses them itself.
USES_TENSORFLOW = ("evaluate", "predict")


def _exported_arch(argv: list[str]) -> str | None:
    """The architecture in --model EXPORT_DIR's model_card.json (None when it cannot be read here)."""
    path = None
    for i, arg in enumerate(argv):
        if arg == "--model" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--model="):
            path = arg.split("=", 1)[1]
    try:
        with open(os.path.join(path, "model_card.json"), encoding="utf-8") as f:
            return json.load(f).get("architecture")
    except (OSError, TypeError, ValueError, AttributeError):
        return None  # no --model, a remote path, or no card: the general choice


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
        cpu.choose(_exported_arch(argv[1:]))  # before TensorFlow starts: it reads them once
    from schemas.logs import console
    console()  # before the stage's imports: Beam logs its known noise while it loads
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.run(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
