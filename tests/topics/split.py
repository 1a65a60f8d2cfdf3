"""Fans out: one echo job per item, the first with a higher priority."""

import jobqueue.script


@jobqueue.script.main
def run(data):
    return [
        jobqueue.script.next_job("echo", {"item": item}, priority=10 if i == 0 else 0)
        for i, item in enumerate(data["items"])
    ]
