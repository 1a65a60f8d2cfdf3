"""Bridges between jobqueue and other frameworks and tools (``contrib.tasks``:
``django.tasks``; ``contrib.metrics``: Prometheus).

Each sits above the transitions layer and reaches jobs only through it (or reads them).
"""
