"""Runner infrastructure for both jobs: Beam options and the pipeline on the requested runner
(`options.py`: `create_pipeline`, `local_runner`, `pipeline_options`), and the fixed DaskRunner
(`dask_runner.py`)."""
