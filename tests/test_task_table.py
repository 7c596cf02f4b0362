"""The task table is the one place that names a task: no other source file holds a task name as a string."""
import io
import os
import tokenize

import pytest

from schemas import tasks
from schemas.spec import TargetSpec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where a task name may be spelled: the table itself (CLI choices and help read it from there).
ALLOWED = {os.path.join("schemas", "tasks.py")}
SKIP_DIRS = {"tests", ".git", ".venv", "node_modules", "__pycache__", "build", "dist"}


def _source_files():
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        for name in files:
            if name.endswith(".py"):
                yield os.path.relpath(os.path.join(root, name), REPO)


def _task_literals(path: str) -> list[str]:
    """`path:line` of each string literal whose value is exactly a task name."""
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        source = f.read()
    found = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.STRING:
            try:
                value = eval(tok.string, {})  # a plain literal: its value
            except Exception:  # noqa: BLE001 - f-strings and the like are never a bare task name
                continue
            if value in tasks.NAMES:
                found.append(f"{path}:{tok.start[0]}: {tok.string}")
    return found


def test_no_task_name_literal_outside_the_table():
    files = [p for p in _source_files() if p not in ALLOWED]
    assert len(files) > 50  # the walk found the source tree
    offenders = [hit for p in files for hit in _task_literals(p)]
    assert offenders == [], "task names spelled outside schemas/tasks.py:\n" + "\n".join(offenders)


def test_the_check_finds_a_literal(tmp_path):
    """The grep is not vacuous: a file comparing a task name is caught."""
    path = tmp_path / "bad.py"
    path.write_text('if task == "multilabel":\n    pass\nx = f"{task} regression"\n')
    found = [h for h in _task_literals(str(path)) if h]
    assert len(found) == 1 and '"multilabel"' in found[0]


@pytest.mark.parametrize("name", tasks.NAMES)
def test_every_row_is_complete(name):
    row = tasks.TASKS[name]
    assert row.checkpoint_mode in ("min", "max")
    assert row.losses and row.train_metrics and row.summary_keys and row.report_sections
    assert row.baseline.metric and row.promotion_metric
    assert set(row.aggregates) <= {"mean", "max", "vote"}
    for label, model_key, base_key in row.headline:
        assert model_key.startswith("model.") and base_key.split(".")[0] == row.baseline.section


def test_target_spec_round_trips_through_the_row_fields():
    for t in (TargetSpec(tasks.NAMES[0], outputs=("a", "b")), TargetSpec("classification", classes=("x", "y")),
              TargetSpec("next_frame", horizon=3), TargetSpec("multilabel", classes=("cat",))):
        d = t.to_dict()
        assert set(d) == {"task", *tasks.task_of(t).fields}
        assert TargetSpec.from_dict(d) == t
    with pytest.raises(tasks.UnknownTask, match="multilabel"):
        tasks.task_of("nope")


def test_task_of_takes_a_row_a_name_or_a_target_spec():
    row = tasks.MULTILABEL
    assert tasks.task_of(row) is row
    assert tasks.task_of(row.name) is row
    assert tasks.task_of(TargetSpec(row.name, classes=("a",))) is row
