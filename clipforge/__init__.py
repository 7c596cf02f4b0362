"""clipforge: raw video corpora to trained Keras video models."""
__version__ = "0.1.0"
