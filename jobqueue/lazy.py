"""Names of a package imported from its modules on first use (PEP 562), so that importing
the package itself loads none of them."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, module_of: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``: each name of ``module_of`` is read
    from ``package.<module_of[name]>`` when it is first asked for::

        __getattr__, __dir__ = lazy_exports(__name__, {"JobResult": "result"})
    """

    def __getattr__(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted([*vars(sys.modules[package]), *module_of])

    return __getattr__, __dir__
