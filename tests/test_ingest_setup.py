"""A wrong set-up fails before any work: one clear message, exit status 2, no traceback, no files."""
import contextlib
import io
import os
import shutil

import pytest

from pipelines.ingest import run
from pipelines.ingest.config import parse_config
from schemas.metadata import DatasetMetadata
from tests import videos
from tests.helpers import cli, unexplained_flags

FLAGS = ["--frames", "4", "--stride", "2", "--fps", "10", "--size", "16x16", "--color", "gray"]


@pytest.fixture(scope="module")
def setup_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("setup")
    (root / "videos").mkdir()
    (root / "empty").mkdir()
    videos.make_video(str(root / "videos" / "a.mkv"), frames=6)
    (root / "labels.csv").write_text("video,target,label\na.mkv,1.0,x\n")
    (root / "a_file").write_text("x")
    return root


def run_captured(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = run(argv)
    return rc, err.getvalue()


def cases(root):
    vids, labels, out = str(root / "videos"), str(root / "labels.csv"), str(root / "out")
    base = ["--input", vids, "--output", out, "--task", "next_frame", *FLAGS]
    reg = ["--input", vids, "--labels", labels, "--output", out, "--task", "regression", *FLAGS]
    bad_csv = root / "dup.csv"
    bad_csv.write_text("video,target\na.mkv,1\nb.mkv,2\na.mkv,3\n")
    typed = root / "typed.csv"
    typed.write_text("video,target\na.mkv,1\nb.mkv,fast\n")
    return [
        (["--input", str(root / "empty"), *base[2:]], "no video files"),
        (["--input", str(root / "videos" / "*.avi"), *base[2:]], "no file matches"),
        (["--input", str(root / "nowhere"), *base[2:]], "does not exist"),
        ([*reg[:3], str(root / "missing.csv"), *reg[4:]], "cannot read labels file"),
        ([*reg, "--target-columns", "speed"], r"lacks column(s) ['speed']"),
        ([*reg[:3], str(bad_csv), *reg[4:]], "rows [1, 3] all label video 'a.mkv'"),
        ([*reg[:3], str(typed), *reg[4:]], "row 2: column 'target' holds 'fast'"),
        (["--input", vids, "--output", str(root / "a_file" / "out"), "--task", "next_frame", *FLAGS],
         "not writable"),
        ([*base[:3], str(root / "videos"), *base[4:]], "already exists"),
        ([*base, "--frames", "0"], "frames=0"),
        ([*base, "--size", "16"], "size='16'"),
        ([*base, "--splits", "0.5,0.6"], "splits="),
        ([*base, "--fame", "3"], "unknown flag(s) --fame"),
        ([*base, "stray"], "unexpected argument(s) ['stray']"),
        ([*base, "--task", "segmentation"], "argument --task: invalid choice"),
        ([*base, "--labels", labels], "next_frame targets are the video's own frames"),
        ([*reg[:2], *reg[4:]], "--task regression needs one"),
        ([*base, "--runner", "NoSuchRunner"], "--runner NoSuchRunner"),
        ([*base, "--encoding", "gif"], "argument --encoding: invalid choice"),
    ]


def test_each_wrong_setup_exits_2_with_one_message_and_writes_nothing(setup_dir):
    for argv, message in cases(setup_dir):
        before = sorted(os.listdir(setup_dir))
        rc, err = run_captured(argv)
        assert rc == 2, (argv, err)
        assert err.startswith("clipforge ingest: error: ") and message in err, (message, err)
        assert err.count("\n") == 1 and "Traceback" not in err
        assert sorted(os.listdir(setup_dir)) == before  # no staging directory, no output


def test_cli_without_ffmpeg_on_path(setup_dir, tmp_path):
    """The bundled decoder needs nothing on PATH; the system one fails fast without ffmpeg/ffprobe."""
    bindir = tmp_path / "bin"  # a PATH with python but without ffmpeg/ffprobe
    bindir.mkdir()
    os.symlink(shutil.which("python3") or "/usr/bin/python3", bindir / "python3")
    argv = ["ingest", "--input", str(setup_dir / "videos"), "--task", "next_frame", *FLAGS]
    res = cli(*argv, "--output", str(tmp_path / "out"), "--decoder", "system", env={"PATH": str(bindir)})
    assert res.returncode == 2, res.stderr
    assert "ffmpeg and ffprobe not found on PATH" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()
    res = cli(*argv, "--output", str(tmp_path / "bundled"), "--decoder", "bundled", env={"PATH": str(bindir)})
    assert res.returncode == 0, res.stderr
    assert DatasetMetadata.load(str(tmp_path / "bundled")).splits["train"]["windows"] > 0


def test_cli_bad_flag_value_exits_2(setup_dir, tmp_path):
    res = cli("ingest", "--input", str(setup_dir / "videos"), "--output", str(tmp_path / "out"),
              "--task", "next_frame", *FLAGS, "--stride", "-1")
    assert res.returncode == 2
    expected = "clipforge ingest: error: stride=-1 is invalid: expected an integer >= 1"
    assert res.stderr.strip().splitlines() == [expected]


def test_help_explains_every_flag():
    from pipelines.ingest.config import build_parser
    res = cli("ingest", "--help")
    assert res.returncode == 0
    parser = build_parser()
    assert len(parser._actions) > 20 and unexplained_flags(parser, res.stdout) == []
    assert "Apache Beam" in res.stdout  # the flags argparse does not know go to Beam (--runner ...)


def test_yaml_config_is_overridden_by_flags(tmp_path):
    cfg = tmp_path / "ingest.yaml"
    cfg.write_text("input: vids\noutput: out\ntask: regression\nlabels: l.csv\ntarget_columns: [speed, angle]\n"
                   "frames: 8\nsize: 32x48\nsplits: [0.9, 0.1]\n")
    config, rest = parse_config(["--config", str(cfg), "--frames", "6", "--direct_num_workers", "2"])
    assert (config.frames, config.height_width, config.target_columns) == (6, (32, 48), ("speed", "angle"))
    assert config.split_names == ("train", "validation") and rest == ["--direct_num_workers", "2"]
    cfg.write_text("input: vids\noutput: out\ntask: next_frame\nfrmes: 8\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['frmes'\]"):
        parse_config(["--config", str(cfg)])
