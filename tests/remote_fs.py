"""A Beam filesystem for tests: `cftest://PATH` is the local PATH behind a URL scheme.

Code that branches on `FileSystems.get_scheme(path)` takes its remote (gs://) path for these
URLs, with no rename of directories and every file reached through FileSystems, while the bytes
land on the local disk where a test can look at them. Importing this module registers it (Beam
finds filesystems among the subclasses of FileSystem), in this process only.
"""
from __future__ import annotations

import os
import shutil

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem

SCHEME = "cftest"
PREFIX = SCHEME + "://"


def url(path) -> str:
    return PREFIX + os.path.abspath(str(path))


def _local(path: str) -> str:
    return path[len(PREFIX):] if path.startswith(PREFIX) else path


def _parents(paths: list[str]) -> list[str]:
    """Local destinations with their folders made: an object store has no folders to be missing."""
    out = [_local(p) for p in paths]
    for p in out:
        os.makedirs(os.path.dirname(p), exist_ok=True)
    return out


class LocalAsRemote(LocalFileSystem):
    """LocalFileSystem under the `cftest://` scheme."""

    @classmethod
    def scheme(cls):
        return SCHEME

    def join(self, basepath, *paths):
        return PREFIX + os.path.join(_local(basepath), *paths)

    def split(self, path):
        head, tail = os.path.split(_local(path))
        return PREFIX + head, tail

    def mkdirs(self, path):
        super().mkdirs(_local(path))

    def _url_dirname(self, url_or_path):
        return PREFIX + os.path.dirname(_local(url_or_path))

    def _list(self, dir_or_prefix):
        root = _local(dir_or_prefix)
        if not os.path.exists(root):
            return
        for d, _, files in os.walk(root):
            for name in files:
                p = os.path.join(d, name)
                yield FileMetadata(PREFIX + p, os.path.getsize(p), os.path.getmtime(p))

    def create(self, path, *args, **kwargs):
        return super().create(_local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return super().open(_local(path), *args, **kwargs)

    def copy(self, source_file_names, destination_file_names):
        super().copy([_local(p) for p in source_file_names], _parents(destination_file_names))

    def rename(self, source_file_names, destination_file_names):
        super().rename([_local(p) for p in source_file_names], _parents(destination_file_names))

    def exists(self, path):
        return super().exists(_local(path))

    def size(self, path):
        return super().size(_local(path))

    def last_updated(self, path):
        return super().last_updated(_local(path))

    def checksum(self, path):
        return super().checksum(_local(path))

    def metadata(self, path):
        m = super().metadata(_local(path))
        return FileMetadata(PREFIX + m.path, m.size_in_bytes, m.last_updated_in_seconds)

    def delete(self, paths):
        for p in map(_local, paths):
            if os.path.isdir(p):
                shutil.rmtree(p)
            else:
                os.remove(p)  # a missing object is an error, as on GCS
