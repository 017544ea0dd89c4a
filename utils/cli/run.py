"""Running a script's ``main``: user errors become one line and exit status 2."""

from __future__ import annotations

import sys

from utils.errors import Interrupted, UserError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_script(main, args, handled=(UserError,)) -> int:
    """Run ``main(args)``; a handled exception becomes ``error: <message>`` on
    stderr and exit status 2 instead of a traceback, Ctrl-C exit status 130."""
    try:
        main(args)
    except handled as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Interrupted as exc:
        print(f"{exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader of our output went away (e.g. `| head`): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0
