"""An output directory written beside itself and swapped in whole: ingest's datasets and predict's outputs.

The staging directory is a hidden sibling with an owner file (host, pid), so the next run for the
same output removes what a killed run left; `publish` swaps it in with schemas/dirs.py's two renames.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import shutil
import socket
import uuid

from apache_beam.io.filesystems import FileSystems

from schemas.dirs import owner_gone, swap_in
from schemas.errors import SetupError
from schemas.logs import get_logger
from schemas.metadata import METADATA_FILE

log = get_logger(__name__)


OWNER_SUFFIX = ".owner"  # beside a local staging dir: {"host", "pid"} of the run writing it


@dataclasses.dataclass(frozen=True)
class Staging:
    """Where a run writes (`work`) and where the finished dataset ends up (`final`).

    Local outputs are written to a hidden sibling directory and renamed into place at the
    end, so a reader never sees a half-written dataset and old and new shards never mix.
    Remote outputs (gs://...) have no atomic rename: they are written in place, with
    metadata.json last as the only mark of a finished dataset.
    """

    final: str
    work: str

    @property
    def local(self) -> bool:
        return FileSystems.get_scheme(self.final) is None


def prepare_output(output: str, overwrite: bool) -> Staging:
    """Checks OUTPUT and creates the staging directory (the writability test), before any work.

    Raises:
      SetupError: OUTPUT exists without --overwrite, is a file, or its parent is not writable.
    """
    if FileSystems.get_scheme(output) is not None:
        root = output.rstrip("/")
        old = [m.path for m in FileSystems.match([root + "/**"])[0].metadata_list]
        if old and not overwrite:
            raise SetupError(f"--output {output} is not empty; pass --overwrite to replace it")
        if old:  # no atomic rename on object stores: the old dataset goes first, metadata.json with it
            FileSystems.delete(sorted(old, key=lambda p: not p.endswith(METADATA_FILE)))
        return Staging(root, root)
    final = os.path.abspath(output)
    if os.path.isfile(final):
        raise SetupError(f"--output {output} is a file, not a directory")
    if os.path.exists(final) and not overwrite:
        raise SetupError(f"--output {output} already exists; pass --overwrite to replace it, or choose a new path")
    remove_abandoned(os.path.dirname(final), os.path.basename(final))
    return Staging(final, new_staging_dir(final, output))


def new_staging_dir(final: str, shown: str) -> str:
    """Creates the hidden sibling `.NAME.tmp-xxxxxxxx` of FINAL and its owner file (host, pid), which
    lets the next run for FINAL remove it if this one is killed (`remove_abandoned`).

    Raises:
      SetupError: the parent is not writable (named as --output SHOWN).
    """
    parent = os.path.dirname(final)
    work = os.path.join(parent, f".{os.path.basename(final)}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(work)
        with open(work + OWNER_SUFFIX, "w") as f:
            json.dump({"host": socket.gethostname(), "pid": os.getpid()}, f)
    except OSError as e:
        raise SetupError(f"--output {shown} is not writable: {e.strerror} ({e.filename})") from None
    return work


def _owner_gone(owner_file: str) -> bool:
    """Whether the run that wrote OWNER_FILE ran on this machine and is no longer running."""
    try:
        with open(owner_file) as f:
            return owner_gone(json.load(f))
    except (OSError, ValueError):
        return False


def remove_abandoned(parent: str, name: str) -> list[str]:
    """Deletes the staging directories of earlier runs for PARENT/NAME that were killed.

    A run killed outright (SIGKILL, out of memory, a lost machine) cannot clean up; its hidden
    staging directory is recognised by the owner file beside it (host and pid) when the next
    run for the same output starts on the same machine. Staging of live runs, of other machines
    and without an owner file is left alone.
    """
    removed = []
    final = os.path.join(parent, name)
    for owner in glob.glob(os.path.join(glob.escape(parent), f".{glob.escape(name)}.tmp-*{OWNER_SUFFIX}")):
        work = owner[:-len(OWNER_SUFFIX)]
        if not os.path.exists(final) and os.path.isdir(f"{work}.old") and _owner_gone(owner):
            # killed between publish's two renames: the finished new dataset, else the old one, goes back
            done = os.path.exists(os.path.join(work, METADATA_FILE))
            os.rename(work if done else f"{work}.old", final)
            log.warning(f"restored {final} from {work if done else work + '.old'}: a run was killed while "
                        "publishing it")
    for owner in glob.glob(os.path.join(glob.escape(parent), f".{glob.escape(name)}.tmp-*{OWNER_SUFFIX}")):
        if _owner_gone(owner):
            work = owner[:-len(OWNER_SUFFIX)]
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(f"{work}.old", ignore_errors=True)
            with contextlib.suppress(OSError):
                os.remove(owner)
            log.warning(f"removed {work}: staging left by a killed run")
            removed.append(work)
    return removed


def publish(staging: Staging) -> None:
    """Moves the finished staging directory into place, replacing an old dataset if any."""
    if not staging.local:
        return
    swap_in(staging.work, staging.final)  # the old one waits at WORK.old until the new one is in
    with contextlib.suppress(OSError):
        os.remove(staging.work + OWNER_SUFFIX)


def discard(staging: Staging) -> None:
    """Removes a failed run's staging directory (never the final one of a remote output)."""
    if staging.local:
        shutil.rmtree(staging.work, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.remove(staging.work + OWNER_SUFFIX)
