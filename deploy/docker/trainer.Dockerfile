# Trainer image: clipforge on the TensorFlow GPU image of the pinned TensorFlow version, for
# `clipforge train | evaluate | retrain` on GPU nodes (deploy/k8s). Build from the repository root:
#   docker build -f deploy/docker/trainer.Dockerfile -t clipforge-trainer .
# Needs only the NVIDIA driver on the node (the image carries CUDA); run with `--gpus all` in Docker.
ARG TF_VERSION=2.21.0
FROM tensorflow/tensorflow:${TF_VERSION}-gpu

ARG TF_VERSION
# Empty: the ffmpeg of the base image's Ubuntu release. Set it (apt's version string) to pin, e.g. to
# match what the Beam worker image decodes with when both build datasets for one model.
ARG FFMPEG_VERSION=

# The base image's Python is the system one and this image has no other use for it, so pip may
# install into it (PEP 668 would refuse otherwise).
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2

COPY deploy/docker/install_ffmpeg.sh /tmp/install_ffmpeg.sh
RUN sh /tmp/install_ffmpeg.sh "$FFMPEG_VERSION" && rm /tmp/install_ffmpeg.sh

# Naming tensorflow at the base image's version makes pip fail rather than replace the GPU build.
COPY pyproject.toml README.md /tmp/clipforge-src/
COPY clipforge /tmp/clipforge-src/clipforge
COPY schemas /tmp/clipforge-src/schemas
COPY pipelines /tmp/clipforge-src/pipelines
COPY trainer /tmp/clipforge-src/trainer
RUN set -eu; \
    python3 -m pip install /tmp/clipforge-src "tensorflow==${TF_VERSION}"; \
    rm -rf /tmp/clipforge-src; \
    python3 -c "import tensorflow as tf; assert tf.__version__ == '${TF_VERSION}', tf.__version__"; \
    clipforge --help > /dev/null

# The multi-worker Job (deploy/k8s/train-multiworker.yaml) derives TF_CONFIG with this script.
COPY deploy/k8s/tf_config.py /opt/clipforge/tf_config.py

# Not root: videos are untrusted input. The Kubernetes manifests run as this uid/gid.
RUN groupadd --gid 10001 clipforge \
 && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin clipforge
USER 10001:10001
WORKDIR /home/clipforge

ENTRYPOINT ["clipforge"]
CMD ["--help"]
