# Beam worker image: the Apache Beam Python SDK image of the pinned Beam version, clipforge installed
# (with the pinned imageio-ffmpeg wheel: its static ffmpeg is the default decoder), and Debian's pinned
# ffmpeg for --decoder system. Use it as --sdk_container_image on Dataflow, Flink and Spark (README, "Running
# on Dataflow / Flink / Spark"). Build from the repository root (`make images` does):
#   docker build -f deploy/docker/beam-worker.Dockerfile -t clipforge-beam-worker .
#
# The SDK image's Beam and Python must equal the launching side's (pyproject pins apache-beam; launch
# from Python 3.11): the runner ships pickled DoFns that only the same versions load.
ARG BEAM_VERSION=2.77.0
ARG PYTHON_VERSION=3.11
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}

ARG BEAM_VERSION
# Debian's version string of ffmpeg in the base image's release (bookworm: 5.1.x). Debian's mirrors keep
# only the newest security build: when this one is superseded the build stops and lists the versions
# on offer; bump it here (or pass --build-arg FFMPEG_VERSION=...).
ARG FFMPEG_VERSION=7:5.1.9-0+deb12u1

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2

COPY deploy/docker/install_ffmpeg.sh /tmp/install_ffmpeg.sh
RUN sh /tmp/install_ffmpeg.sh "$FFMPEG_VERSION" && rm /tmp/install_ffmpeg.sh

# Not editable: the source is removed once installed. Naming apache-beam at the base image's version
# makes pip fail rather than swap out the SDK that the boot entrypoint was built with.
COPY pyproject.toml README.md /tmp/clipforge-src/
COPY clipforge /tmp/clipforge-src/clipforge
COPY schemas /tmp/clipforge-src/schemas
COPY pipelines /tmp/clipforge-src/pipelines
COPY trainer /tmp/clipforge-src/trainer
RUN set -eu; \
    pip install /tmp/clipforge-src "apache-beam[tfrecord]==${BEAM_VERSION}"; \
    pip check; \
    rm -rf /tmp/clipforge-src; \
    python -c "import apache_beam as b; assert b.__version__ == '${BEAM_VERSION}', b.__version__"; \
    clipforge --help > /dev/null; \
    python -c "from pipelines.decoder import resolve; print(resolve('bundled').version)"

# The base image's SDK harness boot program: Dataflow, Flink and Spark start workers through it.
ENTRYPOINT ["/opt/apache/beam/boot"]
