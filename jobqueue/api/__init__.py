"""The JSON API: ``path("jobs/api/", include("jobqueue.api.urls"))``.

Plain Django views, authenticated by session (with CSRF) or by a bearer
:class:`~jobqueue.models_api.ApiToken`, each action checked against the user's
permissions. Its OpenAPI document is served at ``schema``.
"""
