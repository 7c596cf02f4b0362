"""The trainer: tf.data input, the architecture zoo, tf.distribute training and SavedModel export."""


from schemas.errors import ClipforgeError


class TrainerError(ClipforgeError, RuntimeError):
    """A training run cannot go on; the message says why and names the file, field or value (exit 1)."""

    label = "failed"
