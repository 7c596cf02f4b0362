"""What a user would write instead of clipforge ingest: OpenCV decode + PNG + tf.io.TFRecordWriter.

Same windows as the ingest benchmarks (T=8, stride 8, 112x112 gray, every source frame); no splits,
no labels, no dead-letter, no metadata. Run in its own process so imports are timed too.
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


if __name__ == "__main__":
    import json
    print(json.dumps(opencv_loop(sys.argv[2:], sys.argv[1])))
