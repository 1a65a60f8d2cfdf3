"""Exits 0 but writes an output.json that is not JSON."""

with open("output.json", "w") as fh:
    fh.write("{not json")
