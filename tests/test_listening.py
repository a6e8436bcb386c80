"""The LISTEN connections can bypass a transaction-mode pooler, and notice a half-open connection."""

from __future__ import annotations

import os
import socket

import psycopg
import pytest
from django.db import connection

from workers.listening import KEEPALIVES, listen_params


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
