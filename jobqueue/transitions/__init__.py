"""Every change of a job's status, in one place: see :mod:`jobqueue.transitions.table`."""
