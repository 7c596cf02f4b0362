"""Finding the input videos (directory, glob or list file) through Beam's FileSystems."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import posixpath
import re
import shutil
import tempfile
from typing import Iterator

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from schemas.errors import SetupError

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
    ".flv", ".wmv", ".3gp", ".ogv", ".mxf", ".y4m", ".gif"})


@dataclasses.dataclass(frozen=True)
class VideoRef:
    """One input video.

    Attributes:
      path: absolute local path, or a Beam filesystem URL (gs://...).
      video_id: the path under the input root, with / separators (`video_id_under`): the record's
        video_id and the labels join key.
      size: bytes.
      mtime: last modification, seconds since the epoch.
      frames_root: for a frame folder (`path` is the folder), the input root its frames must lie
        in; "" for a video file.
    """

    path: str
    video_id: str
    size: int = 0
    mtime: float = 0.0
    frames_root: str = ""


def is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) is None


def video_id_of(path: str) -> str:
    """The file name of a local path or URL."""
    return os.path.basename(path) if is_local(path) else posixpath.basename(path.rstrip("/"))


def video_id_under(path: str, root: str) -> str:
    """PATH relative to ROOT with / separators; the file name when PATH is not under ROOT."""
    sep = os.sep if is_local(path) else "/"
    root = root.rstrip(sep) + sep if root else ""
    if root and path.startswith(root):
        rel = path[len(root):]
        return rel.replace(os.sep, "/") if sep == os.sep else rel
    return video_id_of(path)


def _dirname(path: str) -> str:
    return os.path.dirname(path) if is_local(path) else posixpath.dirname(path)


def _glob_root(pattern: str) -> str:
    """The deepest directory before the first wildcard of a glob."""
    head = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    return head.rstrip("/") if head.endswith("/") else _dirname(head)


def _common_folder(paths: list[str]) -> str:
    """The longest common folder of absolute paths ("" when there is none, e.g. local and remote mixed)."""
    if not paths:
        return ""
    try:
        local = all(is_local(p) for p in paths)
        return (os.path if local else posixpath).commonpath([_dirname(p) for p in paths])
    except ValueError:
        return ""


def _is_video(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def _match(patterns: list[str]) -> list[tuple[str, int, float]]:
    """(path, size, mtime) of what glob patterns match, through Beam's FileSystems."""
    try:
        return [(m.path, int(m.size_in_bytes or 0), float(m.last_updated_in_seconds or 0.0))
                for r in FileSystems.match(patterns) for m in r.metadata_list]
    except Exception as e:  # noqa: BLE001 - Beam raises BeamIOError or filesystem-specific errors
        raise SetupError(f"cannot list {patterns[0] if len(patterns) == 1 else 'the inputs'}: {e}") from None


def _stat(paths: list[str]) -> list[tuple[str, int, float]]:
    """(path, size, mtime) of the exact paths that exist (a local name may hold * or [)."""
    out, remote = [], [p for p in paths if not is_local(p)]
    for p in paths:
        if is_local(p) and os.path.isfile(p):
            st = os.stat(p)
            out.append((p, st.st_size, st.st_mtime))
    for p in remote:
        out += [m for m in _match([p]) if m[0] == p]
    return out


def _walk(root: str) -> list[tuple[str, int, float]]:
    if not is_local(root):
        return _match([root.rstrip("/") + "/**"])
    found = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]
    return _stat(found)


def _read_list(path: str) -> list[tuple[str, bool]]:
    """(path, whether the list gave it as absolute) per entry; relative ones joined to the list's folder."""
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            text = f.read().decode("utf-8", "surrogateescape")
    except Exception as e:  # noqa: BLE001
        raise SetupError(f"cannot read input list {path}: {e}") from None
    base = os.path.dirname(path) if is_local(path) else posixpath.dirname(path)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            absolute = os.path.isabs(line) or not is_local(line)
            out.append((line if absolute else os.path.join(base, line), absolute))
    return out


def _frame_folders(root: str) -> list[VideoRef]:
    """Folders under ROOT that directly hold image files and no video file: one video each."""
    from pipelines.frames import is_image
    out = []
    for d, _, files in os.walk(root):
        images = [f for f in files if is_image(f)]
        if images and not any(_is_video(f) for f in files):
            stats = [os.lstat(os.path.join(d, f)) for f in images]
            out.append(VideoRef(d, video_id_under(d, root) if d != root else os.path.basename(root),
                                sum(s.st_size for s in stats), max(s.st_mtime for s in stats), frames_root=root))
    return out


def list_videos(spec: str, frame_folders: bool = False) -> tuple[list[VideoRef], list[str]]:
    """Expands --input into videos, each with its id: its path under the input root.

    The root is the directory for a directory input, the deepest directory before the first
    wildcard for a glob, the list file's folder for a list (for the absolute paths of a list,
    their longest common folder); a single file's id is its name. A list that names one path
    twice gives two refs with the same id (`split_duplicates`).

    A directory gives its video files (by extension, recursively); a path with * ? [ is a glob
    (every match is taken); an existing file with a video extension is one video; any other
    file is a list of paths, one per line (blank lines and # comments skipped, relative paths
    taken from the list's folder). Local inputs are regular files only: FIFOs, devices and
    links to them are skipped, since opening one could block or read forever.

    With frame_folders (a local directory input only), a folder under it that directly holds
    image files (pipelines/frames.py) and no video file is one more video, its id the folder's
    path under the root.

    Returns:
      (videos sorted by path, listed paths that do not exist).

    Raises:
      SetupError: nothing matched, naming the input; frame_folders with another kind of input.
    """
    local = is_local(spec)
    listed_missing: list[str] = []
    listed: list[str] = []
    folders: list[VideoRef] = []
    absolute: set[str] = set()
    abs_root = ""
    exists = os.path.exists(spec) if local else FileSystems.exists(spec)
    if (local and os.path.isdir(spec)) or (not local and spec.endswith("/")):
        root = os.path.abspath(spec) if local else spec.rstrip("/")
        found = [m for m in _walk(os.path.abspath(spec) if local else spec) if _is_video(m[0])]
        folders = _frame_folders(root) if frame_folders else []
        what = f"no video files (extensions {', '.join(sorted(VIDEO_EXTENSIONS))}) under {spec}"
    elif any(ch in spec for ch in "*?[") and not exists:
        root = _glob_root(os.path.abspath(spec) if local else spec)
        found = _match([os.path.abspath(spec) if local else spec])
        if local:  # as for directories and lists: regular files only (a FIFO would hang ffprobe)
            found = _stat([m[0] for m in found])
        what = f"no file matches {spec}"
    elif exists and _is_video(spec):
        root = ""
        found = _stat([os.path.abspath(spec) if local else spec])
        what = f"{spec} cannot be read"
    elif exists:
        entries = _read_list(spec)
        paths = [os.path.abspath(p) if is_local(p) else p for p, _ in entries]
        root = _dirname(os.path.abspath(spec) if local else spec)
        absolute = {p for p, (_, was_absolute) in zip(paths, entries) if was_absolute}
        abs_root = _common_folder(sorted(absolute))
        found = _stat(paths)
        seen = {m[0] for m in found}
        listed_missing = [p for p in paths if p not in seen]
        listed = paths
        what = f"none of the {len(paths)} paths listed in {spec} exists"
    else:
        raise SetupError(f"--input {spec} does not exist (expected a directory, a glob or a list file)")
    if frame_folders and not (local and os.path.isdir(spec)):
        raise SetupError(f"--frame-folders needs a local directory as --input, not {spec}")
    if listed:  # a list: a path named twice stays twice (a duplicate id)
        stat = {m[0]: m for m in found}
        found = [stat[p] for p in listed if p in stat]
    else:
        found = list({m[0]: m for m in found}.values())
    refs = sorted([*(VideoRef(p, video_id_under(p, abs_root if p in absolute else root), size, mtime)
                     for p, size, mtime in found), *(folders if frame_folders else [])], key=lambda r: r.path)
    if not refs:
        raise SetupError(what)
    return refs, listed_missing


def split_duplicates(refs: list[VideoRef]) -> tuple[list[VideoRef], list[tuple[VideoRef, VideoRef]]]:
    """Keeps the first video (by path) of each video_id.

    Returns:
      (kept videos, [(duplicate, the kept video with the same id)]).
    """
    kept: dict[str, VideoRef] = {}
    dups = []
    for r in sorted(refs, key=lambda r: r.path):
        if r.video_id in kept:
            dups.append((r, kept[r.video_id]))
        else:
            kept[r.video_id] = r
    return list(kept.values()), dups


def fingerprint(refs: list[VideoRef], config: dict, labels_path: str | None,
                split_lists: dict[str, str] | None = None) -> str:
    """sha256 of the inputs (paths, sizes, mtimes), the labels and split-list files' and the config."""
    h = hashlib.sha256()
    for r in sorted(refs, key=lambda r: r.path):
        h.update(json.dumps([r.path, r.size, r.mtime], ensure_ascii=True).encode())
    if labels_path:
        h.update(json.dumps(["labels", _stat([labels_path])], ensure_ascii=True).encode())
    for name, path in sorted((split_lists or {}).items()):
        h.update(json.dumps(["split_list", name, _stat([path])], ensure_ascii=True).encode())
    h.update(json.dumps(config, sort_keys=True, ensure_ascii=True, default=str).encode())
    return h.hexdigest()


@contextlib.contextmanager
def local_file(path: str, scratch_dir: str) -> Iterator[str]:
    """Yields a local path for `path`: itself when local, else a temp copy deleted afterwards.

    ffmpeg only ever reads local files (its network protocols stay off); a remote input is
    copied through Beam's FileSystems first.
    """
    if is_local(path):
        yield path
        return
    fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(path)[1][:16], dir=scratch_dir)
    try:
        with os.fdopen(fd, "wb") as out, \
                FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as src:
            shutil.copyfileobj(src, out, 1 << 20)
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
