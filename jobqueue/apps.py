from django.apps import AppConfig
from django.core import checks
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _

from . import registry
from .checks import check_settings


class JobQueueConfig(AppConfig):
    name = "jobqueue"
    verbose_name = _("Job queue")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, once the models are loaded: both import them.
        from . import receivers, scripts_topics

        checks.register(check_settings, "jobqueue")
        registry.autodiscover()
        post_migrate.connect(receivers.sync_topics_after_migrate, sender=self)
        receivers.connect()
        # Handlers for the shell topic and TOPICS_DIR scripts; the cron scheduler runs in workers.
        registry.add_resolver(scripts_topics.resolve_shell_handler)
        registry.add_resolver(scripts_topics.resolve_handler)
        # The django.tasks backend, when TASKS names it: its queues become topics now.
        from .contrib.tasks.compat import connect_configured_backends

        connect_configured_backends()
