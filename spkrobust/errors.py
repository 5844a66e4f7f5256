"""Exceptions that carry a one-line message for the user (no traceback is printed for them)."""


class UserError(Exception):
    """Bad input (config, file, option): the CLI prints ``error: <message>`` and exits 2."""


class ConfigError(UserError):
    """A config value is invalid; the message starts with the key path, e.g. ``models.snn.T: ...``."""


class FileProblem(UserError):
    """A file is missing, truncated, of the wrong kind or unsafe; the message names the file."""
