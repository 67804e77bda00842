"""User-facing errors: the CLI prints them as one line and exits with status 2 (bugs keep their tracebacks)."""


class I2DLError(Exception):
    """A mistake in the user's input (data, config, checkpoint), reported in one line."""


class DataError(I2DLError):
    """A dataset file is missing, truncated or malformed."""


class CheckpointError(I2DLError):
    """A checkpoint does not fit the model or task it is loaded into."""
