"""The tasks framework's names under their former module: :mod:`jobqueue.contrib.tasks.compat`
holds them."""

from typing import Any

from .contrib.tasks import compat as _compat

__all__ = list(_compat.__all__)


def __getattr__(name: str) -> Any:
    return getattr(_compat, name)
