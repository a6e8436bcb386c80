"""Settings for the django-tasks-db peer: its database backend, nothing else."""

from __future__ import annotations

import os

import dj_database_url

SECRET_KEY = "peers-bench-not-secret"  # noqa: S105 - throwaway project for a throwaway database
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django_tasks", "django_tasks_db"]
# Persistent connections, as pizzaqueue has by default (Django's own default, 0, reconnects per task).
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("PEERS_DJTASKS_DB_URL", ""), conn_max_age=int(os.environ.get("PEERS_DJTASKS_CONN_MAX_AGE", "60"))
    )
}
# Tells the benchmark which connections are the workers' (pg_stat_activity).
DATABASES["default"]["OPTIONS"] = {"application_name": os.environ.get("PEERS_DJTASKS_APP", "peers-djtasks")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
