"""Feature keys of every tf.train.Example record in a clipforge dataset."""

VIDEO_ID = "video_id"        # bytes: stable id of the source video (its file name without folders)
START_FRAME = "start_frame"  # int64: index of the window's first frame at the resampled fps
START_TIME = "start_time"    # float: that frame's time in seconds
FRAMES = "frames"            # bytes list: T encoded images, or one raw buffer of T*H*W*C bytes
TARGET = "target"            # float list: regression outputs, in the order of TargetSpec.outputs
LABEL = "label"              # int64: class index into TargetSpec.classes
NEXT_FRAMES = "next_frames"  # bytes list: `horizon` encoded images following the window
PADDED_FRAMES = "padded_frames"  # int64: frames (horizon included) repeating the last real one; absent = 0
LABELS = "labels"            # int64 list: multilabel class indices into TargetSpec.classes (may be empty)
