"""``@shared_task`` functions and ``CeleryNext`` handlers used by the Celery compatibility tests."""
