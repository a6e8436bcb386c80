"""A minimal Django project running django-tasks-db (`python -m django db_worker`)."""
