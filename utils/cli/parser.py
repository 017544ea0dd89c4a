"""Command-line parsing shared by every script: a parser whose errors are one
line with exit status 2, help that shows every default, the checked number
types every numeric flag uses, and flags made from a dataclass's fields (a
method's config and recipe).  The toolkit's shared flag groups are in
``pipeline/cli.py``.

Every numeric flag of every script takes one of the types below, so a negative
or absurd value (``--lr -1``, ``--radius -1``, ``--bs 0``, ``nan``) is refused
while parsing, in one line, before any work starts (tests/test_cli.py walks
every script's parser to keep it so)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

EXIT_USAGE = 2


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, and each flag's default after its help
    (left out where there is none to show: None, False, an empty list)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "%(default)" in text or default is None or default is False or \
                default == argparse.SUPPRESS or default == [] or not action.option_strings:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {str(shown).replace('%', '%%')})"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with ``error: <message>`` on one line (no usage dump), exit 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


# No count a flag gives may exceed a billion (nothing is that many items); the
# sizes that decide an allocation or a loop have tighter bounds (below).
MAX_COUNT = 10 ** 9


def _checked(kind, name: str, ok, requirement: str, high=None):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {requirement}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {requirement}, got {text}")
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {requirement}, got {text}")
        if high is not None and value > high:
            upto = "" if str(high) in requirement else f" up to {high}"
            raise argparse.ArgumentTypeError(f"expected {requirement}{upto}, got {text}")
        return value

    parse.__name__ = name
    parse.checked_number = True  # marks the flag as checked for tests/test_cli.py
    parse.high = high  # the upper bound (docs/errors.md lists them)
    parse.kind = kind
    return parse


positive_int = _checked(int, "positive_int", lambda v: v > 0, "a positive integer", MAX_COUNT)
non_negative_int = _checked(int, "non_negative_int", lambda v: v >= 0, "an integer >= 0", MAX_COUNT)
positive_float = _checked(float, "positive_float", lambda v: v > 0, "a positive number")
non_negative_float = _checked(float, "non_negative_float", lambda v: v >= 0, "a number >= 0")
fraction = _checked(float, "fraction", lambda v: 0 <= v <= 1, "a number between 0 and 1")


def int_at_least(low: int, high: int = MAX_COUNT):
    return _checked(int, f"int_at_least_{low}", lambda v: v >= low, f"an integer >= {low}", high)


def int_between(low: int, high: int, name: str):
    """An integer from ``low`` to ``high``: the sizes that decide an allocation."""
    return _checked(int, name, lambda v: v >= low, f"an integer from {low} to {high}", high)


# code lengths (networks, SHAM's L x L solves), image sides, and the like
code_length = int_between(1, 4096, "code_length")
image_side = int_between(1, 4096, "image_side")
thread_count = int_between(1, 1024, "thread_count")
worker_count = int_between(0, 1024, "worker_count")
seed_int = int_between(0, 2 ** 32 - 1, "seed")


def flag_of(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_dataclass_args(group, cls, exclude=(), defaults: bool = False, only=None) -> list:
    """One flag per field of ``cls`` that has help text (``methods.base.option``),
    spelled ``--field-name`` (or the field's ``flag``); its value None unless
    given, so that the method's own default applies (``defaults``: show the
    field default in the help).  Returns the fields added."""
    added = []
    for f in dataclasses.fields(cls):
        help_text = f.metadata.get("help")
        if not help_text or f.name in exclude or (only is not None and f.name not in only) or \
                flag_of(f) in group._option_string_actions:
            continue
        kind = f.metadata.get("type")
        kwargs = {"help": help_text + (f" (default: {_shown(f.default)})"
                                       if defaults and f.default not in (None, False) else "")}
        if f.metadata.get("choices"):
            kwargs["choices"] = list(f.metadata["choices"])
        if isinstance(f.default, bool):
            kwargs["action"] = "store_true"
        elif isinstance(f.default, tuple):
            kwargs.update(nargs="+", type=kind or _element_type(f.default))
        else:
            kwargs["type"] = kind or _scalar_type(f)
        if "action" not in kwargs:
            kwargs["metavar"] = f.name.upper()
        group.add_argument(flag_of(f), dest=f"{cls.__name__}.{f.name}", **kwargs)
        added.append(f)
    return added


def dataclass_values(args, cls) -> dict:
    """The values given for ``cls``'s flags (``add_dataclass_args``), by field name."""
    out = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f"{cls.__name__}.{f.name}", None)
        if value is not None and value is not False:
            out[f.name] = tuple(value) if isinstance(value, list) else value
    return out


def _shown(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _element_type(default: tuple):
    return positive_float if default and isinstance(default[0], float) else positive_int


def _scalar_type(f):
    text = str(f.type)
    if "int" in text:
        return positive_int
    if "float" in text:
        return positive_float
    return str
