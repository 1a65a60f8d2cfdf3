"""Benchmarks of jobqueue beside RQ and Celery: run ``python bench/run.py``."""
