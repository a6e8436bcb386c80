"""Alive means making progress (SPEC §4.12), with real `manage.py worker` processes.

A kitchen that heartbeats but gets nothing written, a handler that blocks
for ever, a kitchen whose every slot is blocked: each time the orders move
on within the heartbeat timeout and one monitor tick of the last progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from django.db import connection

from tests.base import area_owned_by, wait_until
from tests.conftest import FAST_WORKER_ENV, WorkerProcesses
from tests.factory import make_order
from workers.loop import EXIT_STUCK
from workers.models import Order, OrderEvent, Worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]

TIMEOUT = float(FAST_WORKER_ENV["PIZZAQUEUE_HEARTBEAT_TIMEOUT"])
TICK = float(FAST_WORKER_ENV["PIZZAQUEUE_MONITOR_INTERVAL"])
# Seconds the held orders take in the oven (`tests.handlers.slow`).
BAKE = 1.0
# Process scheduling on a shared machine, as the other process tests allow.
SLACK = 0.5

# The database refuses every change of an order's status made for the kitchen named
# "wedged" (its claims and its completions), and nothing else: its heartbeats, and
# every other kitchen's writes, go through.
REFUSE_ON_SQLITE = [
    """CREATE TRIGGER refuse_wedged BEFORE UPDATE OF status ON orders_order FOR EACH ROW
    WHEN NEW.status <> OLD.status AND NEW.worker_id IN (SELECT id FROM workers_worker WHERE name = 'wedged')
    BEGIN SELECT RAISE(ABORT, 'this kitchen''s writes are refused'); END""",
]
REFUSE_ON_POSTGRESQL = [
    """CREATE FUNCTION refuse_wedged() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.status IS DISTINCT FROM OLD.status
           AND NEW.worker_id IN (SELECT id FROM workers_worker WHERE name = 'wedged') THEN
            RAISE EXCEPTION 'this kitchen''s writes are refused';
        END IF;
        RETURN NEW;
    END $$""",
    "CREATE TRIGGER refuse_wedged BEFORE UPDATE ON orders_order FOR EACH ROW EXECUTE FUNCTION refuse_wedged()",
]


@pytest.fixture
def refuse_the_wedged_kitchen(worker_processes: WorkerProcesses) -> Iterator[None]:
    """Installs the refusal when the test calls for it; gone afterwards (a flush keeps triggers)."""
    yield
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP TRIGGER IF EXISTS refuse_wedged" + (" ON orders_order" if connection.vendor == "postgresql" else "")
        )
        if connection.vendor == "postgresql":
            cursor.execute("DROP FUNCTION IF EXISTS refuse_wedged()")


def refuse_now() -> float:
    with connection.cursor() as cursor:
        for statement in REFUSE_ON_POSTGRESQL if connection.vendor == "postgresql" else REFUSE_ON_SQLITE:
            cursor.execute(statement)
    return time.time()


def alive(name: str) -> bool:
    return Worker.objects.filter(name=name, status=Worker.Status.ALIVE).exists()


def moved_at(order: Order) -> float:
    """When the order was first taken from its kitchen (re-queued, reassigned or failed)."""
    kinds = [OrderEvent.Kind.RETRIED, OrderEvent.Kind.REASSIGNED, OrderEvent.Kind.FAILED]
    event = OrderEvent.objects.filter(order=order, kind__in=kinds).order_by("id").first()
    assert event is not None
    return event.created_at.timestamp()


def test_a_kitchen_whose_writes_all_fail_loses_its_orders_within_the_timeout(
    worker_processes: WorkerProcesses, refuse_the_wedged_kitchen: None, record_property: Callable[[str, object], None]
) -> None:
    worker_processes.start("--name", "wedged", "--handler", "tests.handlers.slow", "--concurrency", "2")
    worker_processes.start("--name", "rescuer", "--handler", "orders.handlers.noop")
    wait_until(lambda: alive("wedged") and alive("rescuer"), what="two kitchens")
    wedged = Worker.objects.get(name="wedged", status=Worker.Status.ALIVE)
    held = [make_order(area=area_owned_by(wedged), note=str(BAKE)) for _ in range(2)]
    wait_until(
        lambda: Order.objects.filter(status=Order.Status.PREPARING, worker__name="wedged").count() == 2,
        what="both orders in the wedged kitchen",
    )

    refused_from = refuse_now()  # its completions (and claims) fail from here on; its heartbeats do not
    waiting = make_order(area=area_owned_by(wedged))

    everything = [*held, waiting]
    wait_until(
        lambda: Order.objects.filter(pk__in=[o.pk for o in everything], status=Order.Status.DONE).count() == 3,
        timeout=30,
        what="every order done elsewhere",
    )
    refusals = []
    for order in held:
        # Its first refused write is its completion, when its handler returned.
        (oven,) = OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.STAGE, worker__name="wedged")
        first_refusal = max(refused_from, oven.created_at.timestamp() + BAKE)
        refusals.append(first_refusal)
        moved = moved_at(order) - first_refusal
        assert moved <= TIMEOUT + TICK + SLACK, f"held order moved on {moved:.2f}s after its completion was refused"
        record_property(f"held_moved_after_{order.pk}", round(moved, 2))
    waiting.refresh_from_db()
    assert waiting.claimed_at is not None
    # Both slots were baking until then: the waiting order waited for a slot, not for a wedge.
    stuck_from = max(waiting.created_at.timestamp(), min(refusals))
    waited = waiting.claimed_at.timestamp() - stuck_from
    assert waited <= TIMEOUT + TICK + SLACK, (
        f"waiting order claimed {waited:.2f}s after the kitchen stopped progressing"
    )
    record_property("waiting_claimed_after", round(waited, 2))
    done_by = set(OrderEvent.objects.filter(kind=OrderEvent.Kind.DONE).values_list("worker__name", flat=True))
    assert done_by == {"rescuer"}
    # The wedged kitchen stopped vouching for itself: it left the ring at least once.
    assert Worker.objects.filter(name="wedged", status=Worker.Status.DEAD).exists()


def test_an_order_whose_handler_blocks_for_ever_moves_on_within_the_timeout(
    worker_processes: WorkerProcesses, record_property: Callable[[str, object], None]
) -> None:
    kitchen = worker_processes.start("--name", "patient", "--handler", "tests.poison.handler", "--concurrency", "2")
    wait_until(lambda: alive("patient"), what="kitchen")
    blocked = make_order(note="blocks-for-ever", max_attempts=1)

    wait_until(
        lambda: Order.objects.filter(pk=blocked.pk, status=Order.Status.FAILED).exists(),
        timeout=30,
        what="the blocked order taken back",
    )
    (last_sign_of_life,) = OrderEvent.objects.filter(order=blocked, kind=OrderEvent.Kind.STAGE)
    moved = moved_at(blocked) - last_sign_of_life.created_at.timestamp()
    assert moved <= TIMEOUT + TICK + SLACK, f"the blocked order moved on after {moved:.2f}s"
    record_property("blocked_moved_after", round(moved, 2))
    # Its other slot still bakes, and the kitchen never left the ring.
    normal = make_order(note="")
    wait_until(lambda: Order.objects.filter(pk=normal.pk, status=Order.Status.DONE).exists(), what="normal order")
    assert kitchen.poll() is None
    assert list(Worker.objects.values_list("status", "incarnation")) == [(Worker.Status.ALIVE, 1)]


def test_a_kitchen_whose_every_slot_is_stuck_leaves_the_ring_and_exits(
    worker_processes: WorkerProcesses, record_property: Callable[[str, object], None]
) -> None:
    jammed = worker_processes.start("--name", "jammed", "--handler", "tests.poison.handler", "--concurrency", "1")
    wait_until(lambda: alive("jammed"), what="jammed kitchen")
    order = make_order(note="blocks-for-ever", max_attempts=2)
    wait_until(lambda: Order.objects.filter(pk=order.pk, stage="oven").exists(), what="order in the oven")
    worker_processes.start("--name", "rescuer", "--handler", "orders.handlers.noop")

    assert jammed.wait(timeout=30) == EXIT_STUCK
    wait_until(
        lambda: Order.objects.filter(pk=order.pk, status=Order.Status.DONE).exists(),
        timeout=30,
        what="the order done by the rescuer",
    )
    (last_sign_of_life,) = OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.STAGE)
    moved = moved_at(order) - last_sign_of_life.created_at.timestamp()
    assert moved <= TIMEOUT + TICK + SLACK, f"the order moved on after {moved:.2f}s"
    record_property("jammed_moved_after", round(moved, 2))
    (done,) = OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.DONE)
    assert done.worker is not None and done.worker.name == "rescuer"
    assert set(Worker.objects.filter(name="jammed").values_list("status", flat=True)) == {Worker.Status.DEAD}
