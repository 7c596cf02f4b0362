# clipforge: every target does its own set-up, so a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup ffmpeg test demo bench clean images

# Ingest and predict decode with the static ffmpeg of the imageio-ffmpeg wheel (pip), so set-up needs no apt.
setup: $(STAMP)

# System ffmpeg/ffprobe, for the tests (they make clips with it and test --decoder system) and the bench
# baselines: installed with apt-get when missing and we are root, otherwise a clear stop.
ffmpeg:
	@if command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing ffmpeg with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; \
	else \
	  echo "ffmpeg/ffprobe not found. Install them first: 'sudo apt-get install ffmpeg' (Debian/Ubuntu), 'brew install ffmpeg' (macOS), then rerun make." >&2; exit 1; \
	fi

# The venv is rebuilt only when pyproject.toml changes (idempotent).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dask]'
	@touch $(STAMP)

test: setup ffmpeg
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

demo: setup ffmpeg
	$(BIN)/clipforge demo --workdir demo_out

# Benchmarks are not part of `make test`; they add OpenCV and TensorFlow Datasets for the baselines.
bench: setup ffmpeg
	$(BIN)/python -m pip install -q -e '.[bench,test,dask]'
	$(BIN)/python -m benchmarks.run --workdir bench_out

# Images are tagged with the project version, the tag the deploy/k8s manifests use.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
images:
	docker build -f deploy/docker/beam-worker.Dockerfile -t clipforge-beam-worker:$(VERSION) -t clipforge-beam-worker .
	docker build -f deploy/docker/trainer.Dockerfile -t clipforge-trainer:$(VERSION) -t clipforge-trainer .

clean:
	rm -rf $(VENV) demo_out bench_out .pytest_cache
