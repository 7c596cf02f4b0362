"""clipforge's Apache Beam jobs: ingest (videos -> TFRecord shards) and predict (videos -> Parquet).

`ingest/` and `predict/` hold the two jobs; `runners/` the runner set-up. The modules here are what
both jobs share: finding videos (inputs, frames), probing and decoding them with a guarded ffmpeg
(probe, decode, decoder, subprocess_guard), long videos as segments and a checked frame stream
(segments, streams), the ring buffer of windows (windows), drift signals (signals, drift), where a
pipeline starts (sources), dead letters (dead_letters) and an output directory swapped in whole
(staging).
"""
