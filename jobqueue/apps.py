from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class JobQueueConfig(AppConfig):
    name = "jobqueue"
    verbose_name = _("Job queue")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks
        from django.db.models.signals import post_migrate

        from . import receivers, registry
        from .checks import check_settings

        checks.register(check_settings, "jobqueue")
        registry.autodiscover()
        post_migrate.connect(receivers.sync_topics_after_migrate, sender=self)
        receivers.connect()
        # Handlers for the shell topic and TOPICS_DIR scripts; the cron scheduler runs in workers.
        from . import cron, scripts_topics, shell

        registry.add_resolver(shell.resolve_handler)
        registry.add_resolver(scripts_topics.resolve_handler)
        cron.install()
        # The django.tasks backend, when TASKS names it: its queues become topics now.
        from .contrib.tasks.compat import connect_configured_backends

        connect_configured_backends()
