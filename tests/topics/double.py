"""Doubles data["n"] and chains the result into the echo topic."""

import sys

import jobqueue.script


@jobqueue.script.main
def run(data):
    print(f"doubling {data['n']}")
    print("a note on stderr", file=sys.stderr)
    return jobqueue.script.next_topic("echo", {"n": data["n"] * 2})
