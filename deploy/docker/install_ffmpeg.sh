#!/bin/sh
# Installs ffmpeg/ffprobe from the image's apt sources, pinned to VERSION when one is given.
#   usage: install_ffmpeg.sh [VERSION]     e.g. install_ffmpeg.sh 7:5.1.9-0+deb12u1
#   CHECK_ONLY=1 install_ffmpeg.sh VERSION  only check, against the apt lists already present, that
#                                           VERSION is on offer (exit 1 when not); installs nothing
# Both images run it, so a pin that the sources no longer carry fails the build with one message
# that lists what they do carry, instead of apt's.
set -eu
version="${1:-}"

[ "${CHECK_ONLY:-0}" = "1" ] || apt-get update -qq
if [ -n "$version" ]; then
  available="$(apt-cache madison ffmpeg | awk -F'|' '{gsub(/ /, "", $2); print $2}' | sort -u)"
  if ! printf '%s\n' "$available" | grep -qxF "$version"; then
    echo "install_ffmpeg.sh: ffmpeg $version is not in the apt sources of" \
         "$(. /etc/os-release && echo "$PRETTY_NAME"); available: $(printf '%s\n' "$available" | paste -sd ' ' -)." \
         "Rebuild with --build-arg FFMPEG_VERSION=<one of them>." >&2
    exit 1
  fi
  package="ffmpeg=$version"
else
  package="ffmpeg"
fi
if [ "${CHECK_ONLY:-0}" = "1" ]; then
  echo "install_ffmpeg.sh: $package is available"
  exit 0
fi

DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" > /dev/null
rm -rf /var/lib/apt/lists/*
ffmpeg -hide_banner -version | head -n 1
ffprobe -hide_banner -version | head -n 1
