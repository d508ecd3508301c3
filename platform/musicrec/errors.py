"""Errors a user can act on: printed as one clear message, never as a traceback."""


class InputError(ValueError):
    """The input data is unusable (missing file or column, wrong type, too much quarantined)."""
