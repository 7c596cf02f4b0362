# Flex Template launcher for `clipforge ingest` or `clipforge predict`: the Beam worker image (so the
# launcher builds the job with exactly the workers' code and versions) plus Dataflow's Python template
# launcher. deploy/dataflow/launch.sh builds it once per pipeline:
#   docker build -f deploy/dataflow/flex-launcher.Dockerfile --build-arg PIPELINE=ingest \
#     --build-arg WORKER_IMAGE=REGISTRY/clipforge-beam-worker:TAG -t REGISTRY/clipforge-flex-ingest:TAG .
# Workers still run the worker image: the template is run with sdk_container_image=WORKER_IMAGE.
ARG WORKER_IMAGE=clipforge-beam-worker
# Pin a dated tag from Dataflow's "Flex Template base images" list for a reproducible launcher.
ARG LAUNCHER_BASE_IMAGE=gcr.io/dataflow-templates-base/python311-template-launcher-base:latest
FROM ${LAUNCHER_BASE_IMAGE} AS template_launcher

FROM ${WORKER_IMAGE}
ARG PIPELINE=ingest
COPY --from=template_launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher
COPY deploy/dataflow/flex_main.py deploy/dataflow/${PIPELINE}.metadata.json /template/
# Dependencies are in the image: no FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE / SETUP_FILE, so nothing is
# installed at launch or on the workers.
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/flex_main.py \
    CLIPFORGE_FLEX_PIPELINE=${PIPELINE}
ENTRYPOINT ["/opt/google/dataflow/python_template_launcher"]
