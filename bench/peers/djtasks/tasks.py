"""The tasks the django-tasks-db peer runs."""

from __future__ import annotations

from django_tasks import task

from bench.peers import crash


@task()
def noop() -> None:
    """Does nothing: measures the queue itself."""


@task()
def hang_once(key: str) -> None:
    crash.hang_once(key)
