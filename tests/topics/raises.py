"""Raises inside a jobqueue.script function: a traceback and exit code 1."""

import jobqueue.script


@jobqueue.script.main
def run(data):
    raise ValueError(f"cannot handle {data!r}")
