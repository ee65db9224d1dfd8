"""The two errors every loader raises, so callers can tell a bad file from a wrong one."""


class CheckpointError(ValueError):
    """A model file that is missing, unreadable, or not what the slot expects."""


class ModelLayoutError(ValueError):
    """A checkpoint whose tensors are not the layout the model being loaded has."""
