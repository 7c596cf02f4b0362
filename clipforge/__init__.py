"""clipforge: raw video corpora to trained Keras video models."""
from schemas import __version__  # noqa: F401  (one version, kept in schemas/)
