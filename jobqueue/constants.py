"""Facts that several layers share, each stated once here and imported everywhere else.

Nothing here imports from jobqueue, so every layer may use it, the engine included.
Derived forms live next to their users and are built from these values: the topic
name's patterns in :mod:`jobqueue.validation`, the API's JSON schema, the models'
field sizes and constraints, the commands' help, the named SQL statements. The
migrations keep their own copies: a migration records history.
"""

from __future__ import annotations

#: The longest topic name, in characters (the size of ``Topic.name`` and of a ``next_topic``).
TOPIC_NAME_MAX_LENGTH = 100

#: A job's priority range; higher runs first.
MIN_PRIORITY = -100
MAX_PRIORITY = 100

#: A job's progress, in percent.
MIN_PROGRESS = 0
MAX_PROGRESS = 100

#: The largest value an integer column holds on every supported database (attempts, timeouts).
MAX_INT = 2**31 - 1

#: The size of a job's ``stage`` column, in characters.
STAGE_MAX_LENGTH = 100
#: The size of a job's ``progress_message`` column, in characters.
PROGRESS_MESSAGE_MAX_LENGTH = 255
#: The size of a job's ``entity_id`` column, in characters (``ENTITY_ID_MAX_LENGTH`` may accept fewer).
ENTITY_ID_COLUMN_LENGTH = 255
#: The size of an Execution's ``error_class`` column (an exception class's dotted path), in characters.
ERROR_CLASS_MAX_LENGTH = 255

#: The size of a job's ``key`` column (the key its topic's flow control counts by), in characters.
JOB_KEY_MAX_LENGTH = 100
#: The size of a topic's ``rate`` column (e.g. ``"100/m:10"``), in characters.
RATE_MAX_LENGTH = 32

#: The built-in topic that runs command lines (:mod:`jobqueue.shell`).
SHELL_TOPIC = "shell"
#: The codename of the permission its jobs need (declared in ``Job.Meta.permissions``).
SHELL_PERMISSION_CODENAME = "enqueue_shell_job"
#: The same permission as ``user.has_perm()`` names it.
SHELL_PERMISSION = f"jobqueue.{SHELL_PERMISSION_CODENAME}"
