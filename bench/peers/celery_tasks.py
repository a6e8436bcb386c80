"""Celery app for the benchmark, on the local Redis: `celery -A bench.peers.celery_tasks worker`.

Late acknowledgement (a task is acknowledged after it ran, and re-queued if
its worker process is lost): Celery's at-least-once setting, the closest to
a durable queue's guarantee. Redis then re-delivers an unacknowledged task
only after the transport's visibility timeout (one hour by default).
PEERS_CELERY_ACKS_LATE=0 gives Celery's default instead (acknowledged on
receipt: a task whose worker dies is lost).
"""

from __future__ import annotations

import os

from celery import Celery

from bench.peers import jobs

BROKER_URL = os.environ.get("PEERS_CELERY_BROKER", "redis://127.0.0.1:6379/13")
QUEUE = "peers-bench"

app = Celery("peers", broker=BROKER_URL)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    task_acks_late=os.environ.get("PEERS_CELERY_ACKS_LATE", "1") == "1",
    task_reject_on_worker_lost=True,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=int(os.environ.get("PEERS_CELERY_PREFETCH", "4")),  # Celery's default: 4
)


@app.task(name="noop")
def noop() -> None:
    """Does nothing: measures the queue itself."""


@app.task(name="stamp")
def stamp(sent: float) -> None:
    jobs.record_pickup(sent)


@app.task(name="hang_once")
def hang_once(key: str) -> None:
    jobs.hang_once(key)
