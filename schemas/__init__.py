"""The contract between pipelines/ and trainer/: specs, feature keys, encode/parse, metadata."""
# The project version (pyproject.toml's too), here so trainer/ can stamp exports without importing clipforge.
__version__ = "0.1.0"

from schemas.spec import ENCODINGS, TASKS, TargetSpec, WindowSpec
from schemas.features import (FRAMES, LABEL, NEXT_FRAMES, START_FRAME, START_TIME, TARGET,
                              VIDEO_ID)
from schemas.metadata import (METADATA_FILE, SCHEMA_VERSION, DatasetMetadata,
                              MissingMetadataError)

__all__ = [
    "ENCODINGS", "TASKS", "TargetSpec", "WindowSpec", "FRAMES", "LABEL", "NEXT_FRAMES",
    "START_FRAME", "START_TIME", "TARGET", "VIDEO_ID", "METADATA_FILE", "SCHEMA_VERSION",
    "DatasetMetadata", "MissingMetadataError",
]
