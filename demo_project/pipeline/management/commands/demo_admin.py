"""``python manage.py demo_admin``: create the demo's superuser (admin / admin) if missing."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

USERNAME = "admin"
PASSWORD = "admin"


class Command(BaseCommand):
    help = "Create the demo superuser 'admin' with password 'admin' unless a user of that name exists."

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        if user_model._default_manager.filter(username=USERNAME).exists():
            self.stdout.write(f"The user {USERNAME!r} exists already (its password was left as it is).")
            return
        user_model._default_manager.create_superuser(USERNAME, "admin@example.com", PASSWORD)
        self.stdout.write(f"Created the superuser {USERNAME!r} with password {PASSWORD!r}.")
