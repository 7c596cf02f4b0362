#!/usr/bin/env bash
# Runs `clipforge ingest` or `clipforge predict` on Google Cloud Dataflow: as a Flex Template
# (build once, run many times) or submitted directly from this machine. `--help` explains.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: deploy/dataflow/launch.sh build  ingest|predict
       deploy/dataflow/launch.sh run    ingest|predict NAME=VALUE...
       deploy/dataflow/launch.sh submit ingest|predict [clipforge flags...]

commands:
  build   build and push the Beam worker image and the pipeline's Flex Template launcher image, then
          write the template spec to gs://$BUCKET/templates/<pipeline>.json (needs docker, gcloud)
  run     run that template on Dataflow. NAME=VALUE are template parameters, named as in
          deploy/dataflow/<pipeline>.metadata.json (input=gs://b/videos task=regression num_shards=8);
          values may hold commas (splits=0.8,0.1,0.1). Workers run WORKER_IMAGE.
  submit  run `clipforge <pipeline> [flags] --runner DataflowRunner ...` from this machine (needs
          clipforge installed under Python 3.11, the worker image's Python); the flags are clipforge's
          (--input gs://b/videos --output gs://b/dataset --task regression ...)

environment:
  PROJECT, REGION, BUCKET  required: Google Cloud project, Dataflow region, and a GCS bucket (name
                           only) for templates, staging and temp files
  WORKER_IMAGE    default $REGION-docker.pkg.dev/$PROJECT/clipforge/clipforge-beam-worker:<version>
  LAUNCHER_IMAGE  default $REGION-docker.pkg.dev/$PROJECT/clipforge/clipforge-flex-<pipeline>:<version>
  JOB_NAME        default clipforge-<pipeline>-<UTC time>
  CLIPFORGE       the clipforge command that submit runs (default: clipforge)
  DRY_RUN=1       print each command (shell-quoted, one a line) instead of running it
EOF
}

die() {
  echo "launch.sh: $*" >&2
  exit 2
}

execute() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "$@"
    echo
    return
  fi
  command -v "$1" > /dev/null || die "$1 is not installed or not on PATH"
  "$@"
}

if [[ $# -ge 1 && ($1 == -h || $1 == --help) ]]; then
  usage
  exit 0
fi
if [[ $# -lt 2 ]]; then
  usage >&2
  exit 2
fi
mode=$1
pipeline=$2
shift 2
case $mode in build | run | submit) ;; *) die "unknown command '$mode': expected build, run or submit" ;; esac
case $pipeline in ingest | predict) ;; *) die "unknown pipeline '$pipeline': expected ingest or predict" ;; esac
for var in PROJECT REGION BUCKET; do
  [[ -n "${!var:-}" ]] || die "$var is not set (launch.sh --help lists the environment it reads)"
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/pyproject.toml" | head -n 1)"
registry="$REGION-docker.pkg.dev/$PROJECT/clipforge"
worker_image="${WORKER_IMAGE:-$registry/clipforge-beam-worker:$version}"
launcher_image="${LAUNCHER_IMAGE:-$registry/clipforge-flex-$pipeline:$version}"
job_name="${JOB_NAME:-clipforge-$pipeline-$(date -u +%Y%m%d-%H%M%S)}"
metadata="$here/$pipeline.metadata.json"
template="gs://$BUCKET/templates/$pipeline.json"

case $mode in
  build)
    [[ $# -eq 0 ]] || die "build takes no parameters (got: $*)"
    execute docker build -f "$repo/deploy/docker/beam-worker.Dockerfile" -t "$worker_image" "$repo"
    execute docker push "$worker_image"
    execute docker build -f "$here/flex-launcher.Dockerfile" --build-arg "WORKER_IMAGE=$worker_image" \
      --build-arg "PIPELINE=$pipeline" -t "$launcher_image" "$repo"
    execute docker push "$launcher_image"
    execute gcloud dataflow flex-template build "$template" --project "$PROJECT" \
      --image "$launcher_image" --sdk-language PYTHON --metadata-file "$metadata"
    ;;
  run)
    # Declared and required parameter names, read from the same metadata the template was built with.
    read -r -a declared <<< "$(python3 -c 'import json, sys; print(" ".join(p["name"] for p in json.load(open(sys.argv[1]))["parameters"]))' "$metadata")"
    read -r -a required <<< "$(python3 -c 'import json, sys; print(" ".join(p["name"] for p in json.load(open(sys.argv[1]))["parameters"] if not p.get("isOptional")))' "$metadata")"
    # gcloud splits --parameters on commas unless the list names another separator: ^~^a=1~b=2.
    params="sdk_container_image=$worker_image"
    given=" "
    for pair in "$@"; do
      [[ $pair == *=* ]] || die "'$pair' is not NAME=VALUE"
      name=${pair%%=*}
      [[ " ${declared[*]} " == *" $name "* ]] || die "'$name' is not a parameter of the $pipeline template; it has: ${declared[*]}"
      [[ $pair != *"~"* ]] || die "'$pair' holds '~', which separates the parameters"
      params+="~$pair"
      given+="$name "
    done
    for name in "${required[@]}"; do
      [[ $given == *" $name "* ]] || die "the $pipeline template needs $name=VALUE (required: ${required[*]})"
    done
    execute gcloud dataflow flex-template run "$job_name" --project "$PROJECT" --region "$REGION" \
      --template-file-gcs-location "$template" --staging-location "gs://$BUCKET/staging" \
      --temp-location "gs://$BUCKET/tmp" --additional-experiments use_runner_v2 \
      --parameters "^~^$params"
    ;;
  submit)
    execute "${CLIPFORGE:-clipforge}" "$pipeline" "$@" --runner DataflowRunner --project "$PROJECT" \
      --region "$REGION" --temp_location "gs://$BUCKET/tmp" --staging_location "gs://$BUCKET/staging" \
      --sdk_container_image "$worker_image" --experiments=use_runner_v2 --job_name "$job_name"
    ;;
esac
