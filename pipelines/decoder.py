"""Which ffmpeg decodes: the static build pinned by the imageio-ffmpeg wheel, or the system's ffmpeg/ffprobe."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from schemas.errors import SetupError

DECODERS = ("bundled", "system")
# The default --decoder, where the environment sets one (the test suites run under both).
DECODER_ENV = "CLIPFORGE_DECODER"


class DecoderError(SetupError, RuntimeError):
    """The chosen decoder cannot run on this machine (not installed, not executable)."""


def default_decoder() -> str:
    """$CLIPFORGE_DECODER when set, else "bundled"."""
    return os.environ.get(DECODER_ENV) or "bundled"


@dataclasses.dataclass(frozen=True)
class Decoder:
    """A resolved decoder: the executables to run and the build they are.

    Attributes:
      name: bundled | system.
      ffmpeg: the ffmpeg to execute. For the bundled build a link named `ffmpeg` to the wheel's
        binary, so the process is called ffmpeg (ps, top, pkill) whatever the wheel names it.
      path: the real file of that ffmpeg (what metadata.json names).
      ffprobe: the system ffprobe; "" for the bundled build, which has none: its probe is the
        stream header the decoding ffmpeg itself prints (pipelines/probe.py).
      version: ffmpeg's `ffmpeg version ...` line.
      configuration: ffmpeg's `configuration: ...` line (the build's options).
      package: "imageio-ffmpeg <version>" for the bundled build, "" for the system one.
    """

    name: str
    ffmpeg: str
    path: str
    ffprobe: str
    version: str
    configuration: str
    package: str = ""

    @property
    def one_process(self) -> bool:
        """Probe facts come from the decoding process (no ffprobe): one process per video."""
        return not self.ffprobe

    def describe(self) -> dict:
        """What metadata.json records about the decoder."""
        d = {"name": self.name, "path": self.path, "version": self.version, "configuration": self.configuration}
        if self.ffprobe:
            d["ffprobe"] = os.path.realpath(self.ffprobe)
        if self.package:
            d["package"] = self.package
        return d

    def same_build(self, described: dict) -> bool:
        """Whether a `describe()` (e.g. the launcher's) names this same build."""
        return (described.get("name"), described.get("version"), described.get("configuration")) == \
            (self.name, self.version, self.configuration)


def _version_lines(exe: str) -> tuple[str, str]:
    try:
        out = subprocess.run([exe, "-hide_banner", "-version"], stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, errors="replace", timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise DecoderError(f"{exe} does not run: {e}") from None
    lines = out.stdout.splitlines()
    version = next((l for l in lines if l.startswith("ffmpeg version")), "")
    if out.returncode != 0 or not version:
        raise DecoderError(f"{exe} -version failed (exit status {out.returncode}): {out.stderr.strip()[-200:]}")
    return version, next((l for l in lines if l.startswith("configuration:")), "")


def _named_ffmpeg(exe: str) -> str:
    """A link called `ffmpeg` to EXE, so process lists and limits see the decoder by its name.

    The link lives in one directory per user and binary under the temp dir, shared by every process
    and reused from run to run (no per-process scratch to leave behind when a worker is killed); it
    is made under a temporary name and renamed into place, so concurrent workers never see half a link.
    """
    digest = hashlib.sha256(exe.encode()).hexdigest()[:12]
    d = os.path.join(tempfile.gettempdir(), f"ffmpeg-bundled-{os.getuid()}-{digest}")
    os.makedirs(d, mode=0o700, exist_ok=True)
    link = os.path.join(d, "ffmpeg")
    if os.path.islink(link) and os.readlink(link) == exe:
        return link
    tmp = f"{link}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(exe, tmp)
    os.replace(tmp, link)
    return link


@functools.lru_cache(maxsize=None)
def resolve(name: str) -> Decoder:
    """Finds the decoder NAME on this machine, once per process.

    Raises:
      DecoderError: an unknown name, imageio-ffmpeg not installed or its binary not runnable,
        or ffmpeg/ffprobe not on PATH for "system"; the message says what to install.
    """
    if name == "bundled":
        try:
            import imageio_ffmpeg
            exe = imageio_ffmpeg.get_ffmpeg_exe()
        except (ImportError, RuntimeError) as e:
            raise DecoderError(f"--decoder bundled: the imageio-ffmpeg wheel is missing or has no binary for this "
                               f"platform ({e}); reinstall clipforge (`make setup`) or use --decoder system") from None
        path = os.path.realpath(exe)
        version, configuration = _version_lines(path)
        return Decoder("bundled", _named_ffmpeg(path), path, "", version, configuration,
                       f"imageio-ffmpeg {imageio_ffmpeg.__version__}")
    if name == "system":
        found = {t: shutil.which(t) for t in ("ffmpeg", "ffprobe")}
        missing = [t for t, p in found.items() if not p]
        if missing:
            raise DecoderError(f"{' and '.join(missing)} not found on PATH (--decoder system): install ffmpeg "
                               "(apt-get install ffmpeg, brew install ffmpeg), or use --decoder bundled")
        version, configuration = _version_lines(found["ffmpeg"])
        return Decoder("system", found["ffmpeg"], os.path.realpath(found["ffmpeg"]), found["ffprobe"], version,
                       configuration)
    raise DecoderError(f"decoder={name!r}: expected one of {' | '.join(DECODERS)}")
