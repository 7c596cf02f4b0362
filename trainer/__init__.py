"""The trainer: tf.data input, the architecture zoo, tf.distribute training and SavedModel export."""


class TrainerError(RuntimeError):
    """A training run cannot go on; the message says why and names the file, field or value."""
