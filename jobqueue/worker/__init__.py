"""The worker: ``Worker(topics=[...]).run()``, or ``python manage.py jobworker``."""

from .lifecycle import Outcome
from .supervisor import Supervisor
from .worker import Worker

__all__ = ["Outcome", "Supervisor", "Worker"]
