"""Dataflow Flex Template entry point: the template's parameters in, `clipforge ingest|predict` out."""
from __future__ import annotations

import json
import os
import sys

# Template parameters use the snake_case names of the YAML configs; a few differ from the flag they
# feed because Dataflow gives the name its own meaning (`labels` is a job-labels pipeline option).
RENAMED = {"labels_file": "labels"}
SWITCH_REGEX = "^(true|false)$"


def load_parameters(metadata_path: str) -> dict[str, dict]:
    """The template's declared parameters, by name, from its metadata JSON."""
    with open(metadata_path, encoding="utf-8") as f:
        return {p["name"]: p for p in json.load(f).get("parameters", [])}


def flag_for(name: str) -> str:
    """The clipforge flag a template parameter feeds: labels_file -> --labels, num_shards -> --num-shards."""
    return "--" + RENAMED.get(name, name).replace("_", "-")


def to_cli_args(argv: list[str], parameters: dict[str, dict]) -> list[str]:
    """Turns the launcher's arguments into clipforge flags.

    The launcher passes every template parameter as `--name=value` and adds Beam pipeline options
    (`--runner`, `--project`, `--sdk_container_image`, ...). Declared parameters become clipforge
    flags; a parameter validated by `^(true|false)$` is a switch (true: the bare flag, false: nothing).
    Everything else passes through untouched, for the stage's PipelineOptions.

    Args:
      argv: the arguments the launcher ran this file with.
      parameters: the template's declared parameters (load_parameters).

    Returns:
      The argument list for `clipforge <pipeline>`.
    """
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if name not in parameters:
            out.append(arg)
            continue
        if not eq:
            value = next(args, "")
        if parameters[name].get("regexes") == [SWITCH_REGEX]:
            if value.lower() == "true":
                out.append(flag_for(name))
        else:
            out.append(f"{flag_for(name)}={value}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Runs `clipforge $CLIPFORGE_FLEX_PIPELINE` with the launcher's arguments translated."""
    argv = sys.argv[1:] if argv is None else argv
    pipeline = os.environ.get("CLIPFORGE_FLEX_PIPELINE", "")
    metadata = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{pipeline}.metadata.json")
    if not os.path.exists(metadata):
        print(f"flex_main.py: CLIPFORGE_FLEX_PIPELINE={pipeline!r} has no {metadata}; the launcher image "
              "is built with --build-arg PIPELINE=ingest|predict", file=sys.stderr)
        return 2
    from clipforge.cli import main as clipforge_main
    return clipforge_main([pipeline] + to_cli_args(argv, load_parameters(metadata)))


if __name__ == "__main__":
    sys.exit(main())
