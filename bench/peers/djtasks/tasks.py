"""The tasks the django-tasks-db peer runs."""

from __future__ import annotations

from django_tasks import task

from bench.peers import jobs


@task()
def noop() -> None:
    """Does nothing: measures the queue itself."""


@task()
def stamp(sent: float) -> None:
    jobs.record_pickup(sent)


@task()
def hang_once(key: str) -> None:
    jobs.hang_once(key)
