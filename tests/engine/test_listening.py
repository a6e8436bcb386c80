"""The LISTEN connections can bypass a transaction-mode pooler, notice a half-open
connection, and wake only the kitchen a placed order is for."""

from __future__ import annotations

import os
import socket

import psycopg
import pytest
from django.db import connection

from tests.base import area_owned_by, order_request
from workers import membership, queue, sql
from workers.listening import KEEPALIVES, for_worker, listen_params


def test_listeners_use_the_direct_url_when_one_is_given(settings) -> None:
    settings.PIZZAQUEUE_LISTEN_DATABASE_URL = "postgres://queue:secret@db.internal:5432/pizzaqueue"

    params = listen_params("pizzaqueue-listen-oven-1")

    assert params == {
        "dbname": "pizzaqueue",
        "user": "queue",
        "password": "secret",
        "host": "db.internal",
        "port": 5432,
        "application_name": "pizzaqueue-listen-oven-1",
        **KEEPALIVES,
    }


def test_listeners_default_to_the_main_database_without_djangos_cursor_machinery(settings) -> None:
    settings.PIZZAQUEUE_LISTEN_DATABASE_URL = ""

    params = listen_params("x" * 80)

    assert params["application_name"] == "x" * 63
    assert not {"cursor_factory", "context", "prepare_threshold", "pool"} & set(params)


@pytest.mark.django_db
def test_a_listen_connection_has_tcp_keepalives_on_its_socket() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN is PostgreSQL's")
    params = listen_params("pizzaqueue-relay") | {"host": connection.settings_dict["HOST"] or "127.0.0.1"}
    with psycopg.connect(**params, autocommit=True) as listener:
        # The kernel's own view of the socket libpq opened, not the parameters asked for.
        probe = socket.socket(fileno=os.dup(listener.pgconn.socket))
        try:
            assert probe.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert probe.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVES["keepalives_idle"]
            assert probe.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == KEEPALIVES["keepalives_interval"]
            assert probe.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == KEEPALIVES["keepalives_count"]
        finally:
            probe.close()


def test_a_wake_up_names_one_kitchen_or_is_for_every_kitchen() -> None:
    assert for_worker("7", 7)
    assert not for_worker("7", 8)
    assert for_worker("", 8)  # a release, a retry, a bulk intake: anyone may have work
    assert for_worker("7", None)  # not registered yet: it looks for itself


@pytest.mark.django_db(transaction=True)
def test_a_placed_order_wakes_only_the_kitchen_that_owns_its_bucket() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN is PostgreSQL's")
    kitchens = [membership.register(f"shop-{n}", "host", 100 + n, 1) for n in range(2)]
    params = listen_params("pizzaqueue-listen-test") | {"host": connection.settings_dict["HOST"] or "127.0.0.1"}
    with psycopg.connect(**params, autocommit=True) as listener:
        listener.execute(sql.queries["listen_orders"])
        for kitchen in [*kitchens, *kitchens]:
            queue.place(order_request(area=area_owned_by(kitchen)))
            note = next(listener.notifies(timeout=5))
            assert note.payload == str(kitchen.pk)
