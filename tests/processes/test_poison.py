"""Whatever a handler throws, a kitchen fails that attempt and goes on (SPEC §4.12).

Each poison (tests/poison.py) runs in a real `manage.py worker` process with
one slot: two poisoned orders, then a normal one. The poisoned orders are
charged and end failed (never done), their error is stored readable on both
engines, and the one slot is free again for the normal order. A poisoned
stage name is stored made storable and the order is made.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import DataError

from tests.base import wait_until
from tests.conftest import WorkerProcesses
from tests.factory import make_order
from workers import queue, storable
from workers.loop import WorkerLoop
from workers.models import Order, OrderEvent, Worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]

R = storable.REPLACEMENT
RAISED = {
    "system-exit": "SystemExit: 3",
    "keyboard-interrupt": "KeyboardInterrupt: ",
    "cancelled": "CancelledError: ",
    "base-exception": "NotAnError: not an error",
    "nul-in-error": f"RuntimeError: burnt{R}crust",
    "surrogate-in-error": f"RuntimeError: burnt {R} crust",
    "huge-error": "RuntimeError: " + "x" * (storable.ERROR_LENGTH - len("RuntimeError: ")),
    "unprintable-error": "UnprintableError: <unprintable message>",
}
STAGES = {
    "nul-in-stage": f"ov{R}en",
    "surrogate-in-stage": f"ov{R}en",
    "long-stage": "the-oven-of-a-stage-"[: storable.STAGE_LENGTH],
}


def start_kitchen(worker_processes: WorkerProcesses) -> None:
    worker_processes.start("--name", "poisoned", "--handler", "tests.poison.handler", "--concurrency", "1")
    wait_until(lambda: Worker.objects.filter(name="poisoned", status=Worker.Status.ALIVE).exists(), what="kitchen")


def assert_kitchen_unharmed(worker_processes: WorkerProcesses) -> None:
    (proc,) = worker_processes.procs
    assert proc.poll() is None, worker_processes.logs()
    # Never declared dead nor rejoined: the same incarnation is still working.
    assert list(Worker.objects.values_list("status", "incarnation")) == [(Worker.Status.ALIVE, 1)]


@pytest.mark.parametrize("poison", sorted(RAISED))
def test_whatever_a_handler_raises_fails_the_attempt_and_frees_its_slot(
    worker_processes: WorkerProcesses, poison: str
) -> None:
    start_kitchen(worker_processes)
    poisoned = [make_order(note=poison, max_attempts=2) for _ in range(2)]
    normal = make_order(note="")

    wait_until(
        lambda: (
            Order.objects.filter(pk=normal.pk, status=Order.Status.DONE).exists()
            and Order.objects.filter(pk__in=[o.pk for o in poisoned], status=Order.Status.FAILED).count() == 2
        ),
        timeout=30,
        what=f"the {poison} orders failed and the normal one done",
    )
    for order in poisoned:
        order.refresh_from_db()
        assert order.attempts == 2
        assert order.last_error == RAISED[poison]
        assert not OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.DONE).exists()
        (failed,) = OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.FAILED)
        assert failed.message == RAISED[poison][: storable.MESSAGE_LENGTH]
    assert OrderEvent.objects.filter(kind=OrderEvent.Kind.DONE).count() == 1
    assert_kitchen_unharmed(worker_processes)


@pytest.mark.parametrize("poison", sorted(STAGES))
def test_a_stage_name_no_column_holds_is_stored_made_storable_and_the_order_is_made(
    worker_processes: WorkerProcesses, poison: str
) -> None:
    start_kitchen(worker_processes)
    poisoned = make_order(note=poison, max_attempts=2)
    normal = make_order(note="")

    wait_until(
        lambda: Order.objects.filter(pk__in=[poisoned.pk, normal.pk], status=Order.Status.DONE).count() == 2,
        timeout=30,
        what=f"the {poison} order and the normal one done",
    )
    poisoned.refresh_from_db()
    assert poisoned.attempts == 1
    (stage,) = OrderEvent.objects.filter(order=poisoned, kind=OrderEvent.Kind.STAGE)
    assert stage.stage == STAGES[poison]
    assert not OrderEvent.objects.filter(order=poisoned, kind=OrderEvent.Kind.RELEASED).exists()
    assert_kitchen_unharmed(worker_processes)


def test_a_stage_report_the_database_refuses_is_charged_and_ends_failed_not_looped(
    live_menu: None, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In this process, one turn at a time, with the database refusing every stage
    # report for what it holds (as PostgreSQL refuses a value too long for its column).
    settings.PIZZAQUEUE_RETRY_BACKOFF = 0.0
    monkeypatch.setattr(queue, "report_stage", refuses)
    kitchen = WorkerLoop(lambda order, progress: progress("oven"), name="refused", concurrency=1)
    kitchen.register()
    kitchen._executor = ThreadPoolExecutor(1)
    order = make_order(max_attempts=3)
    try:
        deadline = time.monotonic() + 10
        while (
            time.monotonic() < deadline and not Order.objects.filter(pk=order.pk, status=Order.Status.FAILED).exists()
        ):
            kitchen.step()
    finally:
        kitchen._executor.shutdown(wait=True)
    order.refresh_from_db()
    assert order.status == Order.Status.FAILED
    assert order.attempts == 3
    assert order.last_error.startswith("StageRefusedError: stage 'oven' refused: value too long")
    assert not OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.RELEASED).exists()


def refuses(order_id: Any, token: Any, stage: str, worker_id: Any = None, now: Any = None) -> bool:
    raise DataError("value too long for type character varying(20)")
