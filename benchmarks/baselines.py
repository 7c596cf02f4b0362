"""What a user would write instead of clipforge ingest, on the same windows.

- `opencv`: OpenCV decode + PNG + tf.io.TFRecordWriter.
- `tfds`: TensorFlow Datasets' `tfds.features.Video`, as a dataset builder's
  `_generate_examples` uses it: the feature decodes each video with ffmpeg (to one PNG file per
  frame in a temporary directory, the feature's own code path), and each window is encoded and
  serialized with TFDS's feature dict and example serializer.

Same windows as the ingest benchmarks (T=8, stride 8, 112x112 gray, every source frame); no splits,
no labels, no dead-letter, no metadata. Run in its own process so imports are timed too:
`python -m benchmarks.baselines opencv|tfds OUT.tfrecord CLIP...`.
"""
from __future__ import annotations

import os
import sys
import time


def opencv_loop(paths: list[str], out_path: str, frames: int = 8, stride: int = 8, size: int = 112) -> dict:
    """Decodes with cv2.VideoCapture, encodes each frame once with cv2.imencode, writes Examples."""
    start = time.time()
    import cv2
    import tensorflow as tf
    imports = time.time() - start
    n_frames = n_windows = 0
    with tf.io.TFRecordWriter(out_path) as writer:
        for path in paths:
            cap = cv2.VideoCapture(path)
            encoded = []
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                gray = cv2.cvtColor(cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
                encoded.append(cv2.imencode(".png", gray, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes())
                n_frames += 1
            cap.release()
            for s in range(0, len(encoded) - frames + 1, stride):
                ex = tf.train.Example(features=tf.train.Features(feature={
                    "video_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[os.path.basename(path).encode()])),
                    "start_frame": tf.train.Feature(int64_list=tf.train.Int64List(value=[s])),
                    "frames": tf.train.Feature(bytes_list=tf.train.BytesList(value=encoded[s:s + frames]))}))
                writer.write(ex.SerializeToString())
                n_windows += 1
    return {"frames": n_frames, "windows": n_windows, "seconds": time.time() - start, "import_seconds": imports}


def tfds_video(paths: list[str], out_path: str, frames: int = 8, stride: int = 8, size: int = 112) -> dict:
    """Decodes with tfds.features.Video (ffmpeg -> PNG files), serializes windows with TFDS."""
    start = time.time()
    import tensorflow as tf
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import example_serializer
    imports = time.time() - start
    decoder = tfds.features.Video(shape=(None, size, size, 1), ffmpeg_extra_args=[
        "-threads", "1", "-vf", f"fps=25,scale={size}:{size},format=gray", "-compression_level", "1"])
    features = tfds.features.FeaturesDict({
        "video_id": tfds.features.Text(), "start_frame": tf.int64,
        "frames": tfds.features.Video(shape=(frames, size, size, 1))})
    serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
    n_frames = n_windows = 0
    with tf.io.TFRecordWriter(out_path) as writer:
        for path in paths:
            encoded = decoder._ffmpeg_decode(path)  # the PNG bytes Video.encode_example(path) starts from
            n_frames += len(encoded)
            for s in range(0, len(encoded) - frames + 1, stride):
                example = features.encode_example({"video_id": os.path.basename(path), "start_frame": s,
                                                   "frames": encoded[s:s + frames]})
                writer.write(serializer.serialize_example(example))
                n_windows += 1
    return {"frames": n_frames, "windows": n_windows, "seconds": time.time() - start, "import_seconds": imports}


if __name__ == "__main__":
    import json
    fn = {"opencv": opencv_loop, "tfds": tfds_video}[sys.argv[1]]
    print(json.dumps(fn(sys.argv[3:], sys.argv[2])))
