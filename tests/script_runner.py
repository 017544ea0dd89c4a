"""Run a script's parser and main in-process, as its command line would:
the exit status, with argparse's one-line errors (SystemExit) included."""

from utils.cli import run_script


def run(module, *argv) -> int:
    try:
        args = module.get_args_parser().parse_args([str(a) for a in argv])
    except SystemExit as exc:
        return int(exc.code or 0)
    return run_script(module.main, args)
