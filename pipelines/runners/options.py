"""Beam flags for clipforge jobs: pass-through options, a check for unknown flags, the local runner."""
from __future__ import annotations

from typing import Callable, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from pipelines import staging as staging_dir
from schemas.errors import SetupError

# Runner names that mean "run here". Beam's DirectRunner would first try PrismRunner, which
# downloads a binary at run time (and differs offline and online); clipforge runs the
# DirectRunner's own engine, the FnApiRunner, which honours --direct_num_workers and
# --direct_running_mode. Ask for PrismRunner by name to get it.
LOCAL_RUNNERS = (None, "direct", "directrunner")
# Beam's DaskRunner, by its full name or a short one: clipforge runs it with fixes (pipelines/runners/dask_runner.py).
BEAM_DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
DASK_RUNNERS = ("dask", "daskrunner", BEAM_DASK_RUNNER.lower())
# What --direct_num_workers N (N != 1) runs as when no --direct_running_mode is given: threads of
# one process. A worker's time is mostly its ffmpeg child, which runs in parallel while the thread
# waits on the pipe (the GIL is released there); threads start no SDK processes that each import
# Beam and clipforge (BENCHMARKS.md 1b). Beam's own default, in_memory, would ignore N.
DEFAULT_PARALLEL_MODE = "multi_threading"


def _stray(args: list[str]) -> list[str]:
    """Words that are neither a flag nor the value right after a `--flag` without `=`."""
    out, expects_value = [], False
    for a in args:
        if a.startswith("-"):
            expects_value = "=" not in a
        elif expects_value:
            expects_value = False
        else:
            out.append(a)
    return out


def pipeline_options(args: list[str]) -> PipelineOptions:
    """Builds PipelineOptions from the flags a job did not know, refusing anything Beam doesn't know.

    On the local runner, `--direct_num_workers N` (N != 1) without `--direct_running_mode` runs
    N threads (DEFAULT_PARALLEL_MODE); a mode given on the command line is kept.

    Raises:
      SetupError: a stray argument, an unknown flag (a typo of an ingest flag lands here), or
        a runner that cannot be loaded.
    """
    stray = _stray(args)
    if stray:
        raise SetupError(f"unexpected argument(s) {stray}")
    options = PipelineOptions(args)
    runner = options.view_as(StandardOptions).runner
    if runner and runner.lower() not in LOCAL_RUNNERS:
        from apache_beam.runners.runner import create_runner
        try:  # importing the runner also registers its own flags (e.g. --dask_client_address)
            create_runner(BEAM_DASK_RUNNER if runner.lower() in DASK_RUNNERS else runner)
        except (ValueError, ImportError, AttributeError) as e:
            raise SetupError(f"--runner {runner}: {e}") from None
    unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - set(options.get_all_options()))
    if unknown:
        raise SetupError(f"unknown flag(s) {', '.join('--' + u for u in unknown)}: neither a flag of this "
                         "command (see --help) nor an Apache Beam pipeline option")
    direct = options.view_as(DirectOptions)
    mode_given = any(a == "--direct_running_mode" or a.startswith("--direct_running_mode=") for a in args)
    if (runner is None or runner.lower() in LOCAL_RUNNERS) and direct.direct_num_workers != 1 and not mode_given:
        direct.direct_running_mode = DEFAULT_PARALLEL_MODE
    return options


def create_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A Pipeline on the requested runner, or on the local FnApiRunner by default.

    Beam's DaskRunner is swapped for `pipelines.runners.dask_runner.DaskRunner`, which takes the same
    flags and computes each stage once.
    """
    runner = options.view_as(StandardOptions).runner
    if runner is None or runner.lower() in LOCAL_RUNNERS:
        return beam.Pipeline(runner=local_runner(options), options=options)
    if runner.lower() in DASK_RUNNERS:
        from pipelines.runners.dask_runner import DaskRunner
        return beam.Pipeline(runner=DaskRunner(), options=options)
    return beam.Pipeline(options=options)


def local_runner(options: PipelineOptions | None = None):
    """The FnApiRunner set up as Beam's DirectRunner sets it up (tests pass it to TestPipeline)."""
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle
    encoded = JobServiceHandle.encode_pipeline_options((options or PipelineOptions([])).get_all_options())
    info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return fn_runner.FnApiRunner(provision_info=info)


def is_template_launch(options: PipelineOptions) -> bool:
    """True when the run only stages a Dataflow template (--template_location): nothing ran yet."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    return bool(options.view_as(GoogleCloudOptions).template_location)


def resolve_options(pipeline: Optional[beam.Pipeline], options: Optional[PipelineOptions]) -> PipelineOptions:
    """The options a job runs with: OPTIONS, else the given pipeline's, else the local runner's defaults."""
    if options is not None:
        return options
    return pipeline.options if pipeline is not None else pipeline_options([])


def run_staged(staging: "staging_dir.Staging", build: Callable[[beam.Pipeline], None],
               pipeline: Optional[beam.Pipeline] = None, options: Optional[PipelineOptions] = None,
               finish: Optional[Callable[[], None]] = None) -> bool:
    """Runs a job that writes into STAGING, then swaps STAGING in; both jobs end this way.

    Args:
      build: adds the job's stages to the pipeline.
      pipeline: the pipeline to build into and run (a TestPipeline in tests); by default one made
        from OPTIONS (the local runner when None).
      finish: runs after the job and before the swap (predict writes its report into the staging dir).

    Returns:
      False for a Flex Template launch (the job runs later, on Dataflow: nothing is published), else True.
      A failed or interrupted run removes STAGING: it leaves nothing that looks finished.
    """
    options = resolve_options(pipeline, options)
    try:
        p = pipeline if pipeline is not None else create_pipeline(options)
        build(p)
        p.run().wait_until_finish()
        if is_template_launch(options):
            return False
        if finish is not None:
            finish()
        staging_dir.publish(staging)
    except BaseException:
        staging_dir.discard(staging)
        raise
    return True
