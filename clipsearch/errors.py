"""The one exception type for mistakes a user can make (bad path, unknown index, ...).

The CLI prints its message as a single line and exits non-zero; anything else
is a bug and keeps its traceback.
"""


class ClipsearchError(Exception):
    """A user-caused error with a message that says what to do."""
