"""Who is calling the API: see :mod:`jobqueue.auth`, shared with the metrics view."""

from ..auth import CHALLENGE, Refused, authenticate, enforce_csrf, require

__all__ = ["CHALLENGE", "Refused", "authenticate", "enforce_csrf", "require"]
