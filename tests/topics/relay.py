"""Writes its input back as its output, whatever it holds."""

import jobqueue.script


@jobqueue.script.main
def run(data):
    return data
