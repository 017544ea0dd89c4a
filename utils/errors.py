"""The exceptions a user can cause.  Every script turns a ``UserError`` into
one line ``error: <message>`` and exit status 2; ``Interrupted`` (Ctrl-C)
into its message and exit status 130."""


class UserError(Exception):
    """A problem the user can fix: a missing file, a wrong flag, a checkpoint
    of another shape.  The message is one line naming the problem and the fix."""


class UsageError(UserError):
    """A flag or an input file that does not fit."""


class Interrupted(Exception):
    """Ctrl-C, with a message saying how to continue."""
