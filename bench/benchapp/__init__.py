"""The handlers the benchmark runs (autodiscovered from ``jobs.py``)."""
