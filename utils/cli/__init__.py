"""What every script shares at its edges: parsing (one-line errors, checked
numbers), running ``main`` (exit status 2 for user errors), the device, and
writing results.  Nothing here knows a method, a network or a dataset."""

from utils.cli.data_args import add_data_args, data_kwargs, synthetic_options
from utils.cli.output import check_writable_file, ensure_dir, format_metrics, write_json
from utils.cli.parser import (ArgumentParser, add_device_arg, add_engine_args, add_metric_args,
                              add_report_args, add_speed_args, add_workers_arg, fraction,
                              int_at_least, non_negative_float,
                              non_negative_int, positive_float, positive_int)
from utils.cli.run import run_script
from utils.errors import Interrupted, UsageError, UserError

__all__ = [
    "ArgumentParser", "Interrupted", "add_data_args", "data_kwargs", "synthetic_options", "UsageError", "UserError", "add_device_arg", "add_engine_args",
    "add_metric_args", "add_report_args", "add_speed_args", "add_workers_arg", "check_writable_file", "ensure_dir", "format_metrics",
    "fraction", "int_at_least", "non_negative_float", "non_negative_int", "positive_float",
    "positive_int", "run_script", "write_json",
]
