"""Who may see and change which order (SPEC §9): every order records who placed it.

An integrator's token lists, reads, cancels and streams only its own orders,
and anyone else's is a 404 with exactly the body of an unknown id. Staff see
everything; an order nobody placed is staff-only. A tracking link is the
customer's capability to follow an order, but only the browser that placed
it (or an operator) may cancel it.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from rest_framework.test import APIClient

from orders import roles
from tests.base import in_role, integrator, make_worker
from tests.factory import make_order, order_data
from workers import queue
from workers.loop import WorkerLoop
from workers.models import Order

ORDERS = "/api/orders/"


def place(client: APIClient, **kw: Any) -> str:
    response = client.post(ORDERS, data=json.dumps(order_data(**kw)), content_type="application/json")
    assert response.status_code == 201, response.content
    return str(response.json()["id"])


def listed(client: APIClient, **params: str) -> set[str]:
    response = client.get(ORDERS, params)
    assert response.status_code == 200, response.content
    return {o["id"] for o in response.json()["results"]}


def unknown_order_answer(client: APIClient, path: str, method: str = "get") -> tuple[int, bytes]:
    response = getattr(client, method)(path.format(id=uuid.uuid4()))
    return response.status_code, response.content


# --- The API ---------------------------------------------------------------------


@pytest.mark.django_db
def test_an_integrator_lists_only_its_own_orders(menu: None) -> None:
    alice, bob = integrator("alice"), integrator("bob")
    mine = {place(alice), place(alice, priority=3)}
    theirs = place(bob)
    make_order()  # placed by nobody: staff-only

    assert listed(alice) == mine
    assert listed(alice, status="queued") == mine
    assert listed(alice, priority="3") == {o for o in mine if Order.objects.get(pk=o).priority == 3}
    assert listed(bob) == {theirs}


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), [("get", ORDERS + "{id}/"), ("post", ORDERS + "{id}/cancel/")])
def test_another_integrators_order_is_a_404_with_the_body_of_an_unknown_id(menu: None, method: str, path: str) -> None:
    alice, bob = integrator("alice"), integrator("bob")
    theirs = place(bob)

    response = getattr(alice, method)(path.format(id=theirs))

    assert (response.status_code, response.content) == unknown_order_answer(alice, path, method)
    assert response.status_code == 404
    assert Order.objects.get(pk=theirs).status == Order.Status.QUEUED


@pytest.mark.django_db
def test_an_integrator_reads_and_cancels_its_own_order(menu: None) -> None:
    alice = integrator("alice")
    mine = place(alice)

    assert alice.get(f"{ORDERS}{mine}/").json()["id"] == mine
    response = alice.post(f"{ORDERS}{mine}/cancel/")

    assert response.status_code == 200, response.content
    assert Order.objects.get(pk=mine).status == Order.Status.CANCELLED


@pytest.mark.django_db
def test_an_order_placed_by_nobody_is_seen_by_staff_only(menu: None) -> None:
    alice = integrator("alice")
    staff = APIClient()
    staff.force_authenticate(in_role(User.objects.create_user("operator", is_staff=True), roles.OPERATORS))
    nobodys = make_order()
    alices = place(alice)

    assert alice.get(f"{ORDERS}{nobodys.pk}/").status_code == 404
    assert str(nobodys.pk) not in listed(alice)
    assert staff.get(f"{ORDERS}{nobodys.pk}/").status_code == 200
    assert listed(staff) == {str(nobodys.pk), alices}


@pytest.mark.django_db
def test_staff_cancel_anyones_order_only_with_the_permission_to_change_orders(menu: None) -> None:
    bob = integrator("bob")
    order = place(bob)
    staff_user = User.objects.create_user("operator", is_staff=True)
    staff = APIClient()
    staff.force_authenticate(staff_user)

    assert staff.post(f"{ORDERS}{order}/cancel/").status_code == 404
    staff_user.user_permissions.add(Permission.objects.get(codename="change_order"))
    staff.force_authenticate(User.objects.get(pk=staff_user.pk))  # a fresh permission cache
    response = staff.post(f"{ORDERS}{order}/cancel/")

    assert response.status_code == 200, response.content
    assert Order.objects.get(pk=order).status == Order.Status.CANCELLED


@pytest.mark.django_db
def test_an_idempotent_retry_never_returns_another_integrators_order(menu: None) -> None:
    alice, bob = integrator("alice"), integrator("bob")
    body = json.dumps(order_data())
    first = alice.post(ORDERS, data=body, content_type="application/json", headers={"Idempotency-Key": "k-1"})
    second = bob.post(ORDERS, data=body, content_type="application/json", headers={"Idempotency-Key": "k-1"})

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]
    assert Order.objects.get(pk=second.json()["id"]).placed_by == bob.user  # type: ignore[attr-defined]


# --- The web pages -------------------------------------------------------------------


def form_order(browser: Client) -> Order:
    form = {
        "token": str(uuid.uuid4()),
        "kind": "delivery",
        "qty_margherita": "1",
        "size_margherita": "medium",
        "address": "1 Harbour Street",
        "phone": "020 7946 0958",
    }
    response = browser.post("/orders/", form)
    assert response.status_code == 302, response.content
    return Order.objects.get(pk=response["Location"].split("/")[2])


@pytest.mark.django_db
def test_a_customers_second_browser_sees_the_order_without_its_cancel_button_and_is_refused_a_cancel(
    menu: None,
) -> None:
    first, second = Client(), Client()
    order = form_order(first)

    page = second.get(f"/orders/{order.pk}/")
    assert page.status_code == 200
    assert 'id="cancel-form"' not in page.content.decode()
    assert 'id="cancel-form"' in first.get(f"/orders/{order.pk}/").content.decode()

    refused = second.post(f"/orders/{order.pk}/cancel/")
    assert refused.status_code == 403
    order.refresh_from_db()
    assert order.status == Order.Status.QUEUED

    assert first.post(f"/orders/{order.pk}/cancel/").status_code == 302
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED


@pytest.mark.django_db
def test_a_browser_keeps_its_orders_after_logging_in(menu: None) -> None:
    browser = Client()
    order = form_order(browser)
    browser.force_login(User.objects.create_user("ada"))

    assert browser.post(f"/orders/{order.pk}/cancel/").status_code == 302
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED


@pytest.mark.django_db
def test_an_order_placed_by_nobody_is_cancelled_from_the_web_only_by_an_operator(menu: None) -> None:
    order = make_order()
    customer, operator = Client(), Client()
    operator.force_login(User.objects.create_superuser("root", email=""))

    assert customer.post(f"/orders/{order.pk}/cancel/").status_code == 403
    assert operator.post(f"/orders/{order.pk}/cancel/").status_code == 302
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED


@pytest.mark.django_db
def test_cancelling_an_unknown_order_from_the_web_is_a_404(menu: None) -> None:
    assert Client().post(f"/orders/{uuid.uuid4()}/cancel/").status_code == 404


@pytest.mark.django_db
def test_the_placing_key_is_not_the_session_key(menu: None) -> None:
    browser = Client()
    order = form_order(browser)
    assert order.placed_by_session
    assert order.placed_by_session != browser.session.session_key
    assert order.placed_by is None


# --- What customers see of the kitchens ------------------------------------------------


@pytest.mark.django_db
def test_an_integrator_reads_no_kitchens_lost_lease_on_its_timeline_and_staff_do(menu: None) -> None:
    alice = integrator("alice")
    order_id = place(alice)
    worker = make_worker("shop-1")
    claim = next(c for c in queue.claim(worker.pk, 10) if str(c.order.pk) == order_id)
    queue.requeue(order_id)
    queue.report_stage(claim.order.pk, claim.token, "oven", worker_id=worker.pk)
    staff = APIClient()
    staff.force_authenticate(in_role(User.objects.create_user("operator", is_staff=True), roles.OPERATORS))

    def kinds(client: APIClient) -> list[str]:
        return [e["kind"] for e in client.get(f"{ORDERS}{order_id}/").json()["events"]]

    assert kinds(staff) == ["placed", "claimed", "retried", "lease-lost"]
    assert kinds(alice) == ["placed", "claimed", "retried"]


def test_a_kitchen_started_without_a_name_does_not_name_its_machine() -> None:
    names = {WorkerLoop(handler=lambda order, progress: None).name for _ in range(5)}
    assert len(names) == 5
    for name in names:
        assert name.startswith("kitchen-")
        assert socket.gethostname() not in name
        assert str(os.getpid()) not in name
