"""Helpers shared by test modules (pytest advises against importing conftest)."""
from __future__ import annotations

import argparse


def unexplained_flags(parser: argparse.ArgumentParser, help_text: str) -> list[str]:
    """The parser's long flags that `--help` does not list with the start of their help string.

    The flags come from the parser itself, so a new flag without help, or one the help text leaves
    out, is reported; argparse wraps lines, so whitespace is normalised before comparing.
    """
    text = " ".join(help_text.split())
    missing = []
    for action in parser._actions:
        flags = [f for f in action.option_strings if f.startswith("--")]
        if not flags or flags == ["--help"]:
            continue
        words = " ".join((action.help or "").split()[:3])
        if not words or action.help == argparse.SUPPRESS or flags[0] not in text or words not in text:
            missing.append(flags[0])
    return missing
