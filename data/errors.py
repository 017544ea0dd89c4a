"""The one exception the dataset readers raise for problems a user can fix."""

from utils.errors import UserError

_WORKER_MARKER = "DatasetError: "


class DatasetError(UserError):
    """A dataset is missing, unreadable, empty or malformed.

    The message is a single line naming what was expected where (and the fix),
    so a script can print ``str(err)`` and exit with status 2.
    """

    def __init__(self, message: str):
        # A DataLoader worker sends its exception to the main process by
        # re-creating it as DatasetError("Caught DatasetError in DataLoader
        # worker process N.\nOriginal Traceback ...\n...DatasetError: <msg>").
        # Recover the original one-line message from the traceback's last line
        # so that the script's output stays one line with or without workers.
        text = str(message)
        lines = text.strip().splitlines()
        if len(lines) > 1 and lines[0].startswith("Caught DatasetError"):
            last = lines[-1]
            if _WORKER_MARKER in last:
                text = last.split(_WORKER_MARKER, 1)[1]
        super().__init__(text)
