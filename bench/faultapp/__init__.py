"""Handlers of the fault-injection scenarios (``bench/faults.py``)."""
