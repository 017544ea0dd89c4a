"""The methods, one file each, on one interface (``base.Method``); their
training recipes live in ``recipes/``.  ``method_class(name)`` gives a
method by its registry name, ``create_method(name, config, facts)`` builds
one, ``from_checkpoint(path)`` recognises the method and config a file holds."""

import importlib
import pkgutil

from methods.base import Encoded, Method, Recipe, class_ids, sign_codes
from methods.registry import (LoadedCheckpoint, create_method, from_checkpoint, method_class,
                              method_names, read_checkpoint, register_method)

__all__ = ["Encoded", "LoadedCheckpoint", "Method", "Recipe", "class_ids", "create_method",
           "from_checkpoint", "method_class", "method_names", "read_checkpoint",
           "register_method", "sign_codes"]

# every module of this package is a method file and registers its method on
# import: a new method is a new file, no list to edit
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "registry", "recipes"):
        importlib.import_module(f"methods.{_module.name}")
