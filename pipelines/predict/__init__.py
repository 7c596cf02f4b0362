"""`clipforge predict`: new videos -> the ingest decode and windows -> RunInference on an export -> Parquet.

The stage (`job.py`: `predict(config, pipeline=None, options=None)`, `run(argv)`) and its rooms:
  config      the typed PredictConfig and the flags
  windows     videos decoded into task-free windows (DecodeWindows), as ingest decodes them
  transforms  PredictWindows (RunInference on the SavedModel), WritePredictions, CompareDrift
  report      OUTPUT/report.html
"""
from pipelines.predict.config import PredictConfig, build_parser, parse_config
from pipelines.predict.job import PredictPlan, build_pipeline, limits_of, predict, prepare, run, summary
from pipelines.predict.transforms import FRAMES_DIR, VIDEOS_FILE, WINDOWS_DIR, video_schema, window_schema

__all__ = ["FRAMES_DIR", "VIDEOS_FILE", "WINDOWS_DIR", "PredictConfig", "PredictPlan", "build_parser",
           "build_pipeline", "limits_of", "parse_config", "predict", "prepare", "run", "summary",
           "video_schema", "window_schema"]
