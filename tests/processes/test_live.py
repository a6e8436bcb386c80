"""Live updates end to end: daphne and worker processes, a real WebSocket client.

A worker process writes the events; the daphne process's relay reads them
from the shared database and streams them; this test process only places
orders and listens, like a customer's browser.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db.models import Max
from django.test import Client
from rest_framework.test import APIClient
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection

from orders import roles
from orders.intake import clean_order_request
from tests.base import ROOT, in_role, stop_the_demo, wait_until
from tests.conftest import Daphne, WorkerProcesses, database_url
from tests.factory import make_order, order_data
from workers import queue
from workers.models import Order, OrderEvent, Worker

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def receive(ws: ClientConnection, timeout: float = 15.0) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def staff_cookie() -> str:
    client = Client()
    client.force_login(in_role(User.objects.create_user("operator", is_staff=True), roles.OPERATORS))
    return f"sessionid={client.cookies['sessionid'].value}"


def test_a_client_sees_every_event_of_an_order_in_order_across_a_reconnect(
    daphne: Daphne, worker_processes: WorkerProcesses
) -> None:
    daphne.start()
    # A slow enough kitchen (a margherita takes ~2 s) that the client can drop out mid-way.
    worker_processes.start("--name", "shop-1", PIZZAQUEUE_KITCHEN_SPEED="0.05")
    order = make_order()

    received: list[dict[str, Any]] = []
    with daphne.ws(f"/ws/orders/{order.id}/") as ws:
        while not received or received[-1]["stage"] != "dough":
            received.append(receive(ws))
    # Events keep coming while nobody listens.
    wait_until(lambda: order.events.filter(stage="oven").exists(), what="the oven stage")

    with daphne.ws(f"/ws/orders/{order.id}/?after={received[-1]['id']}") as ws:
        while received[-1]["kind"] != "done":
            received.append(receive(ws))
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)

    assert [(m["kind"], m["stage"]) for m in received] == [
        ("placed", ""),
        ("claimed", ""),
        ("stage", "dough"),
        ("stage", "sauce"),
        ("stage", "oven"),
        ("stage", "boxing"),
        ("done", ""),
    ]
    assert [m["id"] for m in received] == list(order.events.order_by("id").values_list("id", flat=True))
    assert received[-1]["status"] == Order.Status.DONE


def test_the_board_streams_every_event_of_two_busy_kitchens_once_and_in_id_order(
    daphne: Daphne, worker_processes: WorkerProcesses
) -> None:
    daphne.start()
    for name in ("shop-1", "shop-2"):
        worker_processes.start("--name", name, "--concurrency", "4")
    wait_until(lambda: Worker.objects.live().count() == 2, what="two live kitchens")
    before = OrderEvent.objects.aggregate(latest=Max("id"))["latest"] or 0

    with daphne.ws(f"/ws/board/?after={before}", additional_headers={"Cookie": staff_cookie()}) as ws:
        # Orders in bursts, so transactions from both kitchens' threads commit out of id order.
        for _burst in range(4):
            queue.place_many([clean_order_request(order_data(area=f"area-{n}")) for n in range(10)])
        received: list[dict[str, Any]] = []
        while sum(m["kind"] == "done" for m in received) < 40:
            received.append(receive(ws))
        expected = list(
            OrderEvent.objects.filter(id__gt=before, id__lte=received[-1]["id"])
            .order_by("id")
            .values_list("id", flat=True)
        )

    ids = [m["id"] for m in received]
    assert ids == expected  # every event, none twice, none out of order
    assert {m["worker"] for m in received if m["kind"] == "done"} == {"shop-1", "shop-2"}


def test_a_websocket_from_another_site_is_refused(daphne: Daphne) -> None:
    daphne.start()
    order = make_order()
    with pytest.raises(InvalidStatus, match="403"):
        daphne.ws(f"/ws/orders/{order.id}/", origin="http://evil.example")
    with pytest.raises(InvalidStatus, match="403"):
        daphne.ws("/ws/board/")  # no staff session


def test_the_demo_starts_the_web_server_three_kitchens_and_a_staffed_one_and_stops_them_all_on_sigterm(
    live_menu: None, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "demo.log"
    with open(log, "wb") as output:
        demo = subprocess.Popen(
            [sys.executable, "manage.py", "demo", "--port", str(port), "--grace", "1"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": database_url()},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        # Six processes starting at once: on a busy two-core machine that takes a while.
        wait_until(lambda: Worker.objects.live().count() == 4, timeout=60, what="four kitchens")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:  # noqa: S310 - our own server
            assert response.status == 200
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=30) == 0
    finally:
        stop_the_demo(demo)
    output = log.read_text()
    assert f"http://localhost:{port}/board/" in output
    assert f"http://localhost:{port}/kitchen/staffed-1/" in output
    # One account per role, each able to do its own job and no more.
    operator = re.search(r"Operator login: +operator / (\S+)", output)
    kitchen = re.search(r"Kitchen staff: +kitchen / (\S+)", output)
    token = re.search(r"Integrator token: +(\S+)", output)
    assert operator and kitchen and token, output
    browser = Client()
    assert browser.login(username="kitchen", password=kitchen.group(1)) is True
    assert browser.get("/kitchen/staffed-1/").status_code == 200
    assert browser.get("/kitchen/shop-2/").status_code == 403
    assert browser.get("/board/").status_code == 302
    assert browser.login(username="operator", password=operator.group(1)) is True
    assert browser.get("/board/").status_code == 200
    assert browser.get("/kitchen/shop-2/").status_code == 200
    integrator = APIClient()
    integrator.credentials(HTTP_AUTHORIZATION=f"Token {token.group(1)}")
    placed = integrator.post("/api/orders/", order_data(items=[{"pizza": "margherita"}]), format="json")
    assert placed.status_code == 201, placed.content
    assert sorted(Worker.objects.values_list("name", "status", "handler")) == [
        ("shop-1", "stopped", "orders.handlers.kitchen"),
        ("shop-2", "stopped", "orders.handlers.kitchen"),
        ("shop-3", "stopped", "orders.handlers.kitchen"),
        ("staffed-1", "stopped", "orders.handlers.staffed"),
    ]
    assert User.objects.get(username="operator").is_staff is True
