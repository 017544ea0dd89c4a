"""The methods, one file each, on one interface (``base.Method``); their
training recipes live in ``recipes/``.  ``method_class(name)`` gives a
method by its registry name."""

from methods import dcdh, dchn, opqn, triplet  # noqa: F401  (register the methods)
from methods.base import Encoded, Method, class_ids, sign_codes
from methods.registry import method_class, method_names, register_method

__all__ = ["Encoded", "Method", "class_ids", "method_class", "method_names", "register_method",
           "sign_codes"]
