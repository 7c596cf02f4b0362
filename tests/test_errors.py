"""One error root: every exception class clipforge defines derives from ClipforgeError, with an exit code."""
from __future__ import annotations

import importlib
import inspect
import pathlib

import pytest

from schemas.errors import ClipforgeError, SetupError, exits

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "pipelines", "trainer", "clipforge")


def modules() -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_every_clipforge_exception_derives_from_the_root_with_a_valid_exit_code():
    found = {}
    for name in modules():
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == name:
                found[f"{name}.{cls.__qualname__}"] = cls
    assert len(found) >= 15  # the errors of every stage, not an empty scan
    strays = [n for n, cls in found.items() if not issubclass(cls, ClipforgeError)
              and not issubclass(cls, (KeyboardInterrupt, StopIteration))]
    assert strays == []
    assert {n: cls.exit_code for n, cls in found.items() if cls.exit_code not in (1, 2, 3)} == {}
    # the set-up errors the README promises exit 2 for
    for name in ("schemas.configs.ConfigError", "schemas.spec.SpecError", "schemas.metadata.MissingMetadataError",
                 "pipelines.decoder.DecoderError", "trainer.evaluation.stage.EvaluationError"):
        assert issubclass(found[name], SetupError) and found[name].exit_code == 2, name


@pytest.mark.parametrize("error,code,line", [
    (SetupError("--size=3x: expected HEIGHTxWIDTH"), 2, "clipforge x: error: --size=3x: expected HEIGHTxWIDTH"),
    (ClipforgeError("a shard is damaged"), 1, "clipforge x: error: a shard is damaged"),
])
def test_exits_prints_one_line_and_returns_the_errors_code(capsys, error, code, line):
    @exits("clipforge x")
    def run(argv):
        raise error

    assert run([]) == code
    assert capsys.readouterr().err.splitlines() == [line]


def test_exits_lets_other_exceptions_through():
    @exits("clipforge x")
    def run(argv):
        raise KeyError("a bug, with its traceback")

    with pytest.raises(KeyError):
        run([])
