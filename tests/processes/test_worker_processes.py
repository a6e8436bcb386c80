"""The guarantees of SPEC §4, proven with real `manage.py worker` processes.

Every test starts worker subprocesses against the test database, breaks them
the way production breaks them (SIGKILL, SIGSTOP past the timeout, SIGTERM),
and checks the rows they leave behind.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from orders.intake import clean_order_request
from tests.base import area_owned_by, wait_until
from tests.conftest import FAST_WORKER_ENV, WorkerProcesses
from tests.factory import make_order, order_data
from workers import membership, queue
from workers.models import Bucket, MonitorLease, Order, OrderEvent, Worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]

TIMEOUT = float(FAST_WORKER_ENV["PIZZAQUEUE_HEARTBEAT_TIMEOUT"])
TICK = float(FAST_WORKER_ENV["PIZZAQUEUE_MONITOR_INTERVAL"])


def live_workers(count: int) -> bool:
    return Worker.objects.filter(status=Worker.Status.ALIVE).count() == count


def events(order: Order, kind: str) -> list[OrderEvent]:
    return list(OrderEvent.objects.filter(order=order, kind=kind).select_related("worker"))


def test_four_racing_workers_do_every_order_exactly_once(worker_processes: WorkerProcesses) -> None:
    for n in range(4):
        worker_processes.start("--name", f"shop-{n}", "--handler", "orders.handlers.noop", "--concurrency", "8")
    wait_until(lambda: live_workers(4), what="four live workers")
    requests = [clean_order_request(order_data(area=f"area-{n % 37}")) for n in range(400)]
    queue.place_many(requests)

    wait_until(lambda: Order.objects.filter(status=Order.Status.DONE).count() == 400, what="400 done orders")
    for proc in worker_processes.procs:
        proc.send_signal(signal.SIGTERM)
    assert [proc.wait(timeout=30) for proc in worker_processes.procs] == [0, 0, 0, 0]

    done_events = OrderEvent.objects.filter(kind=OrderEvent.Kind.DONE)
    assert done_events.count() == 400
    assert not done_events.values("order").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert OrderEvent.objects.filter(kind=OrderEvent.Kind.LEASE_LOST).count() == 0
    # The work really was shared: more than one kitchen baked.
    bakers = set(Order.objects.values_list("worker__name", flat=True))
    assert len(bakers) > 1
    assert set(Worker.objects.values_list("status", flat=True)) == {Worker.Status.STOPPED}


def test_a_killed_workers_order_is_requeued_in_time_and_done_once_by_another(
    worker_processes: WorkerProcesses,
) -> None:
    doomed = worker_processes.start("--name", "doomed", "--handler", "tests.handlers.slow")
    wait_until(lambda: live_workers(1), what="doomed worker")
    order = make_order(note="60")
    wait_until(lambda: Order.objects.filter(pk=order.pk, stage="oven").exists(), what="order in the oven")
    worker_processes.start("--name", "rescuer", "--handler", "orders.handlers.noop")
    wait_until(lambda: live_workers(2), what="rescuer")

    doomed.send_signal(signal.SIGKILL)
    killed_at = time.time()
    doomed.wait(timeout=10)

    wait_until(
        lambda: Order.objects.filter(pk=order.pk, status=Order.Status.DONE).exists(),
        timeout=20,
        what="order done by the rescuer",
    )
    (reassigned,) = events(order, OrderEvent.Kind.REASSIGNED)
    recovery = reassigned.created_at.timestamp() - killed_at
    # SPEC §4.4: within heartbeat_timeout + one monitor tick (plus process scheduling slack).
    assert recovery <= TIMEOUT + TICK + 0.5, f"recovered after {recovery:.2f}s"
    (done,) = events(order, OrderEvent.Kind.DONE)
    assert done.worker.name == "rescuer"
    order.refresh_from_db()
    assert order.attempts == 2
    assert reassigned.data["to_shop"] == "rescuer"
    assert Worker.objects.get(name="doomed").status == Worker.Status.DEAD
    assert not Bucket.objects.filter(owner__name="doomed").exists()


def sqlite_write_lock_free() -> bool:
    """Whether a writer can take SQLite's one write lock within half a second."""
    probe = sqlite3.connect(connection.settings_dict["NAME"], timeout=0.5, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        probe.close()


def pause(proc: subprocess.Popen[bytes]) -> None:
    """SIGSTOP a worker. On SQLite, not in the middle of a write: a process
    frozen while holding the database's one write lock stalls every writer
    (the monitor included) until it resumes, which is SQLite's single-writer
    design, not what this test is about. So resume it until it lets go."""
    for _ in range(50):
        os.kill(proc.pid, signal.SIGSTOP)
        if connection.vendor != "sqlite" or sqlite_write_lock_free():
            return
        os.kill(proc.pid, signal.SIGCONT)
        wait_until(sqlite_write_lock_free, timeout=10, what="the worker to release the write lock")
    raise AssertionError("could not pause the worker outside a write transaction")


def test_a_paused_worker_cannot_complete_an_order_it_lost(worker_processes: WorkerProcesses) -> None:
    paused = worker_processes.start("--name", "paused", "--handler", "tests.handlers.slow_first_attempt")
    worker_processes.start("--name", "other", "--handler", "tests.handlers.slow_first_attempt")
    wait_until(lambda: live_workers(2), what="two workers")
    order = make_order(note="2", area=area_owned_by(Worker.objects.get(name="paused")))
    wait_until(lambda: Order.objects.filter(pk=order.pk, stage="oven").exists(), what="order in the oven")
    in_oven = time.monotonic()

    pause(paused)
    wait_until(
        lambda: Order.objects.filter(pk=order.pk, worker__name="other", stage="oven").exists(),
        timeout=20,
        what="order in the other worker's oven",
    )
    # Past its own bake time, so the paused handler returns the moment it resumes,
    # while the other worker (6 s on a second attempt) is still baking the order.
    time.sleep(max(0.0, in_oven + 2.5 - time.monotonic()))
    os.kill(paused.pid, signal.SIGCONT)

    # The late completion meets an order that is `preparing` again, under another
    # lease: only the token tells the two kitchens apart, and it refuses.
    wait_until(lambda: events(order, OrderEvent.Kind.LEASE_LOST), timeout=20, what="lease-lost event")
    (lost,) = events(order, OrderEvent.Kind.LEASE_LOST)
    assert lost.data["action"] == "complete"
    assert lost.worker.name == "paused"
    assert Order.objects.filter(pk=order.pk, status=Order.Status.PREPARING, worker__name="other").exists()
    wait_until(
        lambda: Order.objects.filter(pk=order.pk, status=Order.Status.DONE).exists(),
        timeout=20,
        what="order done by the other worker",
    )
    (done,) = events(order, OrderEvent.Kind.DONE)
    assert done.worker.name == "other"
    # It noticed it had been declared dead and came back as a new incarnation.
    wait_until(
        lambda: Worker.objects.filter(name="paused", incarnation=2, status=Worker.Status.ALIVE).exists(),
        what="re-registered incarnation",
    )
    assert Worker.objects.get(name="paused", incarnation=1).status == Worker.Status.DEAD
    assert paused.poll() is None


def test_sigterm_finishes_in_flight_orders_and_stops_cleanly(worker_processes: WorkerProcesses) -> None:
    proc = worker_processes.start("--name", "closing", "--handler", "tests.handlers.slow", "--concurrency", "2")
    wait_until(lambda: live_workers(1), what="worker")
    first, second = make_order(note="1.5"), make_order(note="1.5")
    wait_until(lambda: Order.objects.filter(stage="oven").count() == 2, what="two orders in the oven")

    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert proc.wait(timeout=15) == 0
    # Finished the bake (1.5 s) without waiting for any timeout.
    assert time.monotonic() - signalled < 1.5 + TIMEOUT

    assert set(Order.objects.values_list("status", flat=True)) == {Order.Status.DONE}
    for order in (first, second):
        assert len(events(order, OrderEvent.Kind.DONE)) == 1
    assert not OrderEvent.objects.filter(kind__in=[OrderEvent.Kind.RETRIED, OrderEvent.Kind.REASSIGNED]).exists()
    worker = Worker.objects.get(name="closing")
    assert worker.status == Worker.Status.STOPPED
    assert worker.stopped_at is not None
    assert not Bucket.objects.filter(owner=worker).exists()
    assert not MonitorLease.objects.filter(holder=worker).exists()


def baking_for_a_minute(worker_processes: WorkerProcesses, name: str) -> tuple[subprocess.Popen[bytes], Order]:
    """A worker with a one-second shutdown grace, with an order in its oven for a minute."""
    proc = worker_processes.start("--name", name, "--handler", "tests.handlers.slow", PIZZAQUEUE_SHUTDOWN_GRACE="1")
    wait_until(lambda: live_workers(1), what="worker")
    order = make_order(note="60")
    wait_until(lambda: Order.objects.filter(pk=order.pk, stage="oven").exists(), what="order in the oven")
    return proc, order


def test_an_order_still_baking_after_the_grace_period_goes_back_to_the_queue(
    worker_processes: WorkerProcesses,
) -> None:
    proc, order = baking_for_a_minute(worker_processes, "slowcoach")

    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert proc.wait(timeout=15) == 0
    assert time.monotonic() - signalled < 1 + TIMEOUT  # the grace period, not the 60 s bake

    order.refresh_from_db()
    assert order.status == Order.Status.QUEUED
    assert order.lease_token is None
    (moved,) = events(order, OrderEvent.Kind.REASSIGNED)
    assert moved.data["why"] == "stopped"
    assert Worker.objects.get(name="slowcoach").status == Worker.Status.STOPPED


def test_sigterm_hands_back_prefetched_orders_it_never_started(worker_processes: WorkerProcesses) -> None:
    proc = worker_processes.start(
        "--name", "closing", "--handler", "tests.handlers.slow", "--concurrency", "1", "--prefetch", "2"
    )
    wait_until(lambda: live_workers(1), what="worker")
    orders = [make_order(note="1") for _ in range(3)]
    wait_until(lambda: Order.objects.filter(status=Order.Status.PREPARING).count() == 3, what="three claimed")

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0

    statuses = sorted(Order.objects.values_list("status", flat=True))
    assert statuses == [Order.Status.DONE, Order.Status.QUEUED, Order.Status.QUEUED]
    released = OrderEvent.objects.filter(kind=OrderEvent.Kind.RELEASED)
    assert released.count() == 2
    # Nothing was tried, so nothing was spent.
    assert set(Order.objects.filter(status=Order.Status.QUEUED).values_list("attempts", flat=True)) == {0}
    assert {o.pk for o in orders} >= set(released.values_list("order_id", flat=True))


def test_a_second_signal_forces_the_exit(worker_processes: WorkerProcesses) -> None:
    proc = worker_processes.start("--name", "stubborn", "--handler", "tests.handlers.slow")
    wait_until(lambda: live_workers(1), what="worker")
    make_order(note="60")
    wait_until(lambda: Order.objects.filter(stage="oven").exists(), what="order in the oven")

    proc.send_signal(signal.SIGINT)
    wait_until(lambda: "stopping on signal=SIGINT" in worker_processes.logs(), what="first signal noticed")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=5) == 1


def test_a_raising_handler_retries_with_backoff_then_dead_letters(worker_processes: WorkerProcesses) -> None:
    worker_processes.start("--name", "unlucky", "--handler", "tests.handlers.explode")
    wait_until(lambda: live_workers(1), what="worker")
    order = make_order(max_attempts=3)

    wait_until(lambda: Order.objects.filter(pk=order.pk, status=Order.Status.FAILED).exists(), what="failed order")
    order.refresh_from_db()
    assert order.attempts == 3
    assert order.last_error == "RuntimeError: oven on fire"
    claimed = events(order, OrderEvent.Kind.CLAIMED)
    retried = events(order, OrderEvent.Kind.RETRIED)
    assert len(claimed) == 3
    assert [e.data["retry_in"] for e in retried] == [0.1, 0.2]
    # Each retry waited out its backoff before the next claim.
    for retry, next_claim in zip(retried, claimed[1:], strict=True):
        assert (next_claim.created_at - retry.created_at).total_seconds() >= retry.data["retry_in"]
    (failed,) = events(order, OrderEvent.Kind.FAILED)
    assert failed.message == "RuntimeError: oven on fire"


def test_a_worker_takes_orders_by_priority_then_age_and_waits_for_not_before(
    worker_processes: WorkerProcesses, settings
) -> None:
    settings.PIZZAQUEUE_PRIORITY_AGING = 1.0
    later = make_order(not_before=timezone.now() + timedelta(days=30))
    low_old = make_order(priority=0)
    normal = make_order(priority=5)
    urgent_a = make_order(priority=9)
    urgent_b = make_order(priority=9)
    proc = worker_processes.start("--name", "solo", "--handler", "orders.handlers.noop", "--burst")
    assert proc.wait(timeout=30) == 0

    claimed = list(
        OrderEvent.objects.filter(kind=OrderEvent.Kind.CLAIMED).order_by("id").values_list("order_id", flat=True)
    )
    assert claimed == [urgent_a.pk, urgent_b.pk, normal.pk, low_old.pk]
    later.refresh_from_db()
    assert later.status == Order.Status.QUEUED


def test_a_stage_report_lost_to_the_database_charges_no_attempt(worker_processes: WorkerProcesses) -> None:
    worker_processes.start("--name", "flaky", "--handler", "tests.handlers.loses_its_connection_once")
    wait_until(lambda: live_workers(1), what="worker")
    order = make_order(max_attempts=1)  # a charged attempt would dead-letter it

    wait_until(
        lambda: Order.objects.filter(pk=order.pk, status__in=Order.FINAL_STATUSES).exists(),
        timeout=20,
        what="the order finished",
    )

    order.refresh_from_db()
    assert (order.status, order.attempts) == (Order.Status.DONE, 1)
    (released,) = events(order, OrderEvent.Kind.RELEASED)
    assert released.data["reason"] == queue.INTERRUPTED
    assert [e.kind for e in OrderEvent.objects.filter(order=order).order_by("id")] == [
        "placed",
        "claimed",
        "released",
        "claimed",
        "stage",
        "done",
    ]


def test_a_drain_hands_the_buckets_over_at_once_and_ends_within_the_grace(
    worker_processes: WorkerProcesses,
) -> None:
    proc, stuck = baking_for_a_minute(worker_processes, "draining")
    worker_processes.start("--name", "staying", "--handler", "orders.handlers.noop")
    wait_until(lambda: live_workers(2), what="second worker")
    draining = Worker.objects.get(name="draining", status=Worker.Status.ALIVE)
    its_area = area_owned_by(draining)

    assert membership.drain(draining.pk)
    drained = time.monotonic()
    # Its buckets are the staying worker's at once: an order in its area is baked
    # now, not after the 60 s one.
    assert not Bucket.objects.filter(owner=draining).exists()
    later = make_order(area=its_area)
    wait_until(lambda: Order.objects.filter(pk=later.pk, status=Order.Status.DONE).exists(), what="later order")
    assert events(later, OrderEvent.Kind.DONE)[0].worker.name == "staying"

    assert proc.wait(timeout=15) == 0
    assert time.monotonic() - drained < 1 + TIMEOUT  # the grace, not the 60 s bake
    assert Worker.objects.get(pk=draining.pk).status == Worker.Status.STOPPED
    # What it could not finish went to the staying worker.
    wait_until(lambda: Order.objects.filter(pk=stuck.pk, status=Order.Status.DONE).exists(), what="stuck order")
    (moved,) = events(stuck, OrderEvent.Kind.REASSIGNED)
    assert moved.data == {"to_shop": "staying", "why": "stopped"}


def in_a_transaction(name: str) -> bool:
    """Whether a worker's session is idle inside a transaction that has written."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            " AND state = 'idle in transaction' AND backend_xid IS NOT NULL",
            [f"pizzaqueue-worker-{name}"],
        )
        return cursor.fetchone()[0] > 0


def pause_inside_a_transaction(proc: subprocess.Popen[bytes], name: str) -> None:
    for _ in range(200):
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(0.01)
        if in_a_transaction(name):
            return
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.005)
    raise AssertionError("could not pause the worker inside a transaction")


def test_a_kitchen_paused_inside_a_transaction_does_not_stall_another_kitchens_recovery(
    worker_processes: WorkerProcesses,
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite's one write lock: pause() keeps its kitchens out of a write (SQLite's design)")
    worker_processes.start("--name", "monitor", "--handler", "orders.handlers.noop")
    wait_until(lambda: MonitorLease.objects.filter(holder__name="monitor").exists(), what="the monitor elected")
    frozen = worker_processes.start("--name", "frozen", "--handler", "tests.handlers.chatty")
    doomed = worker_processes.start("--name", "doomed", "--handler", "tests.handlers.slow")
    wait_until(lambda: live_workers(3), what="three workers")
    reporting = make_order(note="120", area=area_owned_by(Worker.objects.get(name="frozen", incarnation=1)))
    baking = make_order(note="120", area=area_owned_by(Worker.objects.get(name="doomed", incarnation=1)))
    wait_until(
        lambda: Order.objects.filter(pk__in=[reporting.pk, baking.pk], stage="oven").count() == 2, what="both baking"
    )

    # Frozen holding a row lock the monitor needs to declare it dead; it becomes stale first.
    pause_inside_a_transaction(frozen, "frozen")
    time.sleep(0.5)
    doomed.send_signal(signal.SIGKILL)
    killed_at = time.time()
    doomed.wait(timeout=10)

    wait_until(
        lambda: events(baking, OrderEvent.Kind.REASSIGNED),
        timeout=TIMEOUT + 10,
        what="the killed kitchen's order recovered",
    )
    (reassigned,) = events(baking, OrderEvent.Kind.REASSIGNED)
    recovery = reassigned.created_at.timestamp() - killed_at
    assert recovery <= TIMEOUT + TICK + 1.0, f"recovered after {recovery:.2f}s"
    wait_until(lambda: Worker.objects.filter(name="frozen", incarnation=1, status="dead").exists(), what="frozen dead")


def test_an_order_cancelled_in_the_kitchen_stops_at_its_next_step(worker_processes: WorkerProcesses) -> None:
    worker_processes.start("--name", "busy", "--handler", "tests.handlers.chatty")
    wait_until(lambda: live_workers(1), what="worker")
    order = make_order(note="30")
    wait_until(lambda: Order.objects.filter(pk=order.pk, stage="oven").exists(), what="order in the oven")

    queue.cancel(order.pk, "cancelled by an operator", if_held=lambda _order: True)
    cancelled_at = time.monotonic()

    # The kitchen's next stage report is refused: it stops there, and says so.
    wait_until(lambda: events(order, OrderEvent.Kind.LEASE_LOST), timeout=10, what="the kitchen stopping")
    assert time.monotonic() - cancelled_at < 1.0
    order.refresh_from_db()
    assert (order.status, order.lease_token) == (Order.Status.CANCELLED, None)
    # Nothing more: no stage after the cancel, no completion, ever.
    stages_before = OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.STAGE).count()
    time.sleep(0.5)
    assert OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.STAGE).count() == stages_before
    assert not events(order, OrderEvent.Kind.DONE)


def test_a_kitchen_that_finishes_an_order_cancelled_in_its_oven_cannot_complete_it(
    worker_processes: WorkerProcesses,
) -> None:
    worker_processes.start("--name", "oblivious", "--handler", "tests.handlers.slow")
    wait_until(lambda: live_workers(1), what="worker")
    order = make_order(note="1.5")  # reports the oven, then bakes without a word
    wait_until(lambda: Order.objects.filter(pk=order.pk, stage="oven").exists(), what="order in the oven")

    queue.cancel(order.pk, "cancelled by an operator", if_held=lambda _order: True)

    wait_until(lambda: events(order, OrderEvent.Kind.LEASE_LOST), timeout=10, what="the late completion refused")
    (lost,) = events(order, OrderEvent.Kind.LEASE_LOST)
    assert lost.data["action"] == "complete"
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED
    assert not events(order, OrderEvent.Kind.DONE)
