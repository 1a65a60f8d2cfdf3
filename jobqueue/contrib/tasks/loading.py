"""Finding the task a job names, without importing or calling anything else."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterable
from typing import Any

from django.apps import apps

from .compat import Task
from .exceptions import TaskNotAllowed

_TASK_PATH = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+\Z")


def load_task(path: Any, extra_modules: Iterable[str] = ()) -> Any:
    """The ``Task`` object at ``path``, refusing anything else.

    The module is imported only if it is already imported, belongs to an
    installed app, or is under one of ``extra_modules``; the attribute must be a
    ``Task`` (so ``os.system`` and the like are never called).
    """
    if not isinstance(path, str) or not _TASK_PATH.match(path):
        raise TaskNotAllowed(f"{path!r} is not the dotted path of a task.")
    module_name, _, name = path.rpartition(".")
    if module_name not in sys.modules:
        allowed = apps.get_containing_app_config(module_name) is not None or any(
            module_name == m or module_name.startswith(f"{m}.") for m in extra_modules
        )
        if not allowed:
            raise TaskNotAllowed(
                f"Refusing to import {module_name!r} for task {path!r}: it is not part of an installed app "
                "(list it in the backend's OPTIONS['TASK_MODULES'] to allow it)."
            )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskNotAllowed(f"Cannot import the module of task {path!r}: {exc}") from exc
    obj = getattr(module, name, None)
    if not isinstance(obj, Task):
        raise TaskNotAllowed(f"{path!r} is a {type(obj).__name__}, not a task; only @task functions run.")
    return obj
