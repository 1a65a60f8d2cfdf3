"""The built-in ``shell`` topic: run one command line per job.

Off unless ``JOBQUEUE["SHELL_TOPIC"] = True``: while off, enqueueing a ``shell``
job is refused and a worker refuses to run one already queued. When on, only
code, the command line and users with the ``jobqueue.enqueue_shell_job``
permission may enqueue one, directly or through a chain that leads here (the
admin and the API check it with :mod:`jobqueue.permissions`).

Payload: ``{"command": "convert in.png out.jpg"}`` (split with :func:`shlex.split`)
or ``{"argv": ["convert", "in.png", "out.jpg"]}``. No shell ever parses it: pipes,
redirections and ``$VARS`` are plain arguments. The command runs in the job's
``DATA_DIR`` folder (else a temporary folder) with the job's timeout; stdout,
stderr and the exit code are recorded on the Execution, and a non-zero exit fails
the attempt. The result is ``{"exit_code": 0}``.

This module holds what enqueueing checks; the handler, which runs the process the
way a script topic does, is :func:`jobqueue.scripts_topics.run_shell`.
"""

from __future__ import annotations

import shlex
from typing import Any

from django.core.exceptions import PermissionDenied

from .conf import settings
from .constants import SHELL_PERMISSION
from .exceptions import InvalidJob

#: The permission a user needs to enqueue a shell job (``user.has_perm(...)``); an older
#: name of :data:`jobqueue.constants.SHELL_PERMISSION`.
PERMISSION = SHELL_PERMISSION


class ShellTopicDisabled(InvalidJob):
    """The shell topic is off (``JOBQUEUE["SHELL_TOPIC"]`` is not ``True``)."""


def is_enabled() -> bool:
    return settings.SHELL_TOPIC is True


def check_enabled() -> None:
    if not is_enabled():
        raise ShellTopicDisabled(
            "The shell topic is disabled; set JOBQUEUE['SHELL_TOPIC'] = True to let jobs run commands."
        )


def command_argv(payload: Any) -> list[str]:
    """The argument list a shell payload asks for; :class:`InvalidJob` for anything else."""
    if not isinstance(payload, dict) or set(payload) not in ({"command"}, {"argv"}):
        raise InvalidJob(
            'A shell job\'s payload is {"command": "..."} or {"argv": ["...", ...]}, and nothing else.'
        )
    if "command" in payload:
        command = payload["command"]
        if not isinstance(command, str):
            raise InvalidJob(f"shell: command must be a string, not {command!r}.")
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise InvalidJob(f"shell: cannot split command {command!r}: {exc}.") from None
    else:
        argv = payload["argv"]
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise InvalidJob(f"shell: argv must be a list of strings, not {argv!r}.")
    if not argv or not argv[0]:
        raise InvalidJob("shell: the command is empty.")
    if any("\x00" in a for a in argv):
        raise InvalidJob("shell: arguments must not contain NUL characters.")
    return argv


def check_enqueue(payload: Any) -> None:
    """Everything enqueueing a shell job checks before writing: the switch, then the payload."""
    check_enabled()
    command_argv(payload)


def user_may_enqueue(user: Any) -> bool:
    """Whether ``user`` (a Django user) may enqueue shell jobs: the topic is on and the user
    holds :data:`SHELL_PERMISSION`."""
    return is_enabled() and bool(user is not None and user.has_perm(SHELL_PERMISSION))


def check_permission(user: Any) -> None:
    """Raise :class:`ShellTopicDisabled`, or Django's ``PermissionDenied``, unless
    :func:`user_may_enqueue`."""
    check_enabled()
    if not user_may_enqueue(user):
        raise PermissionDenied(f"Enqueueing a shell job needs the {SHELL_PERMISSION} permission.")
