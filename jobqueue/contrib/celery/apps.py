from django.apps import AppConfig
from django.core import checks
from django.utils.translation import gettext_lazy as _

from .checks import check_bridge_settings


class CeleryBridgeConfig(AppConfig):
    """``jobqueue.contrib.celery``: the ``jobbridge`` command and its settings' checks."""

    name = "jobqueue.contrib.celery"
    label = "jobqueue_celery"
    verbose_name = _("Job queue: Celery bridge")

    def ready(self) -> None:
        checks.register(check_bridge_settings, "jobqueue")
