"""Errors a user can act on: printed as one clear message and an exit code, never as a traceback.

Exit codes (every verb, ``musicrec <verb>`` and ``jobs/<verb>.py`` alike):

- 0: done
- 1: :class:`InputError`: the input is missing or unusable (a file, a lake table, too much quarantined)
- 2: :class:`ConfigError`: the config or the command line is wrong (key, type, range, unset value,
  a server the profile needs but was not given)
- 3: :class:`NotBuiltError`: a verb of the spec that is not built yet

Anything else is a bug and keeps its traceback.
"""


class MusicrecError(Exception):
    """Base of every error a user can fix; ``exit_code`` is what the command returns."""

    exit_code = 1


class InputError(MusicrecError, ValueError):
    """The input data is unusable (missing file, table or column, wrong type, too much quarantined)."""

    exit_code = 1


class ConfigError(MusicrecError, ValueError):
    """A config that cannot be used; the message names the key and where its value came from."""

    exit_code = 2


class NotBuiltError(MusicrecError):
    """A verb the spec names that later work will build."""

    exit_code = 3
