"""Bridges between jobqueue and other frameworks (``contrib.tasks``: ``django.tasks``).

Each sits above the transitions layer and reaches jobs only through it.
"""
