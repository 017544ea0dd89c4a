"""What every script shares at its edges: parsing (one-line errors, checked
numbers, defaults in --help, flags from dataclass fields), running ``main``
(exit status 2 for user errors), the device, and writing results.  Nothing
here knows a method, a network or a dataset."""

from utils.cli.output import check_writable_file, ensure_dir, format_metrics, write_json
from utils.cli.parser import (ArgumentParser, add_dataclass_args, code_length, dataclass_values,
                              fraction, image_side, int_at_least, int_between, non_negative_float,
                              non_negative_int, positive_float, positive_int, seed_int,
                              thread_count, worker_count)
from utils.cli.run import run_script
from utils.errors import Interrupted, UsageError, UserError

__all__ = [
    "ArgumentParser", "Interrupted", "UsageError", "UserError", "add_dataclass_args",
    "check_writable_file", "code_length", "dataclass_values", "ensure_dir", "format_metrics",
    "fraction", "image_side", "int_at_least", "int_between", "non_negative_float",
    "non_negative_int", "positive_float", "positive_int", "run_script", "seed_int",
    "thread_count", "worker_count", "write_json",
]
