"""Exceptions for mistakes a user can fix: shown as one line, never a traceback."""


class UserError(Exception):
    """Bad input: a config key, a file, a dataset row. The message names it."""


class ConfigError(UserError, ValueError):
    """A config file or ``--set`` value that is missing, unknown or out of range."""


class DataError(UserError, ValueError):
    """A dataset that is missing, malformed or does not fit the model."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be read or does not fit the run."""
