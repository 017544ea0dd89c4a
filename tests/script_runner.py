"""Run a script's parser and main in-process, as its command line would:
the exit status, with argparse's one-line errors (SystemExit) included."""

import inspect

from utils.cli import run_script


def run(module, *argv) -> int:
    argv = [str(a) for a in argv]
    try:
        # train.py's parser depends on the command line (the method's flags)
        takes_argv = bool(inspect.signature(module.get_args_parser).parameters)
        parser = module.get_args_parser(argv) if takes_argv else module.get_args_parser()
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return run_script(module.main, args)
