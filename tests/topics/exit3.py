"""Complains and exits with code 3."""

import sys

print("looking at the input")
print("bad input: no 'n'", file=sys.stderr)
sys.exit(3)
